"""Per-sample adaptive RBE paths: every sample takes its own backward-error-bounded steps.

One jit-compiled ``lax.while_loop`` advances the whole batch; a sample that reached clean
data (index ``-1``) is masked: its state no longer changes.  The loop ends when every sample
is finished or after ``max_steps`` iterations.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._batch import check_noise, compute_dtype, nonfinite_rows, per_sample, place_model
from .backward_error import backward_error, check_tau, step_size
from .models import prepare_model
from .noise import NoiseSchedule
from .solvers import ddim_update

__all__ = ["AdaptivePaths", "adaptive_paths"]


class AdaptivePaths(NamedTuple):
    """Output of :func:`adaptive_paths`.

    Attributes:
      paths: ``(B, max_steps + 1)`` int32 grid-index paths; column 0 is ``K - 1``, a finished
        path ends at ``-1`` and is padded with ``-1``.
      samples: ``(B, ...)`` the samples where each path ended.
      nfe: ``(B,)`` int32 steps taken by each sample (= its model evaluations).
      finished: ``(B,)`` bool, whether the sample reached clean data within ``max_steps``.
      nonfinite_step: ``(B,)`` int32, the first step at which eps, the backward-error
        indicator or the DDIM update was NaN/Inf for that sample (``-1``: never).
      nonfinite_index: ``(B,)`` int32, the grid index at that step (``-1``: never).
      iterations: scalar int32, loop iterations run (each a batched forward + VJP).
    """

    paths: jax.Array
    samples: jax.Array
    nfe: jax.Array
    finished: jax.Array
    nonfinite_step: jax.Array
    nonfinite_index: jax.Array
    iterations: jax.Array


class _LoopState(NamedTuple):
    """Carry of the adaptive loop."""

    step: jax.Array  # scalar int32: iterations run
    idx: jax.Array  # (B,) int32 current grid index (-1: finished)
    x: jax.Array  # (B, ...) current samples
    paths: jax.Array  # (B, K + 1) int32 index paths so far, padded with -1
    nfe: jax.Array  # (B,) int32 steps taken
    bad_step: jax.Array  # (B,) int32 first step with a non-finite value (-1: none)
    bad_index: jax.Array  # (B,) int32 grid index at that step


def _adaptive_loop(model, alpha_bar_ext, timesteps, noise, tau, max_steps) -> AdaptivePaths:
    """The jitted core.  Every argument is traced, so one compilation serves every threshold
    and step cap for a given (model structure, grid size, batch shape, dtype); ``paths`` has
    room for the longest possible path, ``(B, K + 1)``."""
    B = noise.shape[0]
    K = timesteps.shape[0]
    cdt = compute_dtype(noise.dtype)
    ext = alpha_bar_ext.astype(cdt)
    tau = jnp.asarray(tau, cdt)
    init = _LoopState(
        step=jnp.zeros((), jnp.int32),
        idx=jnp.full((B,), K - 1, jnp.int32),
        x=noise,
        paths=jnp.full((B, K + 1), -1, jnp.int32).at[:, 0].set(K - 1),
        nfe=jnp.zeros((B,), jnp.int32),
        bad_step=jnp.full((B,), -1, jnp.int32),
        bad_index=jnp.full((B,), -1, jnp.int32),
    )

    def cond(s: _LoopState):
        return (s.step < max_steps) & jnp.any(s.idx >= 0)

    def body(s: _LoopState):
        active = s.idx >= 0
        k = jnp.maximum(s.idx, 0)  # finished samples are evaluated at grid point 0, then masked
        a, a_next = ext[k + 1], ext[k]
        x = s.x.astype(cdt)
        be = backward_error(model, x, timesteps[k], a, a_next)
        nxt = step_size(be.indicator, k, ext, tau).next_index
        x_new = ddim_update(x, be.eps.astype(cdt), a, ext[nxt + 1])
        # A NaN indicator fails every comparison of the step rule and would "finish" the
        # sample in one jump: it is recorded like a NaN eps or update.
        bad = nonfinite_rows(be.eps) | ~jnp.isfinite(be.indicator) | nonfinite_rows(x_new)
        first_bad = active & bad & (s.bad_step < 0)
        new_idx = jnp.where(active, nxt, s.idx)
        return _LoopState(
            step=s.step + 1,
            idx=new_idx,
            x=jnp.where(per_sample(active, x), x_new.astype(s.x.dtype), s.x),
            paths=jax.lax.dynamic_update_slice(s.paths, new_idx[:, None], (jnp.int32(0), s.step + 1)),
            nfe=s.nfe + active.astype(jnp.int32),
            bad_step=jnp.where(first_bad, s.step, s.bad_step),
            bad_index=jnp.where(first_bad, s.idx, s.bad_index),
        )

    s = jax.lax.while_loop(cond, body, init)
    return AdaptivePaths(
        paths=s.paths,
        samples=s.x,
        nfe=s.nfe,
        finished=s.idx < 0,
        nonfinite_step=s.bad_step,
        nonfinite_index=s.bad_index,
        iterations=s.step,
    )


_adaptive_loop_jit = jax.jit(_adaptive_loop)


def adaptive_paths(
    model,
    grid: NoiseSchedule,
    noise: jax.Array,
    tau,
    max_steps: int | None = None,
    chunk_size: int | None = None,
) -> AdaptivePaths:
    """Runs the adaptive RBE rule for every sample from the noisiest grid point to clean data.

    At each step a sample at grid index ``k`` evaluates eps and the backward-error
    indicator (one forward pass + one VJP), takes ``h = min(sqrt(tau/||g||), 1 - a_k)``,
    snaps down to the grid (at least one grid step) and moves there with DDIM, reusing eps.

    Args:
      model: ``model(x, t) -> eps`` (a plain function or a pytree model).
      grid: the (respaced) :class:`NoiseSchedule` of ``K`` points.
      noise: ``(B, ...)`` samples at grid point ``K - 1``.
      tau: backward-error threshold, > 0 (may be a traced scalar).
      max_steps: loop bound, ``1 <= max_steps <= K`` (default ``K``, enough for every path).
        A traced value of the compiled loop: changing it does not recompile.
      chunk_size: run the batch in chunks of this many samples (one compilation; the last
        chunk is padded) to bound memory, which grows linearly with the batch.  Paths are
        per-sample, so the result is the same as one run; ``iterations`` is then summed
        over chunks.
    Returns:
      :class:`AdaptivePaths`.
    """
    if not isinstance(grid, NoiseSchedule):
        raise TypeError(f"grid must be a NoiseSchedule, got {type(grid).__name__}")
    check_tau(tau)
    noise = check_noise(noise)
    max_steps = grid.K if max_steps is None else int(max_steps)
    if not 1 <= max_steps <= grid.K:
        raise ValueError(f"max_steps must satisfy 1 <= max_steps <= K = {grid.K} (no path is longer), got {max_steps}")
    model = place_model(prepare_model(model), noise)
    B = noise.shape[0]
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    chunk = B if chunk_size is None else min(int(chunk_size), B)
    ext = jnp.asarray(grid.alpha_bar_ext, compute_dtype(noise.dtype))
    ts = jnp.asarray(grid.timesteps, jnp.int32)
    cap = jnp.asarray(max_steps, jnp.int32)

    def run(x):
        r = _adaptive_loop_jit(model, ext, ts, x, tau, cap)
        return r._replace(paths=r.paths[:, : max_steps + 1])

    if chunk == B:
        return run(noise)
    parts = []
    for start in range(0, B, chunk):
        x = noise[start : start + chunk]
        n = x.shape[0]
        if n < chunk:  # pad with copies of the first rows: same shape, no new compilation
            x = jnp.concatenate([x, noise[: chunk - n]], axis=0)
        parts.append((n, run(x)))
    fields = {
        f: jnp.concatenate([getattr(r, f)[:n] for n, r in parts], axis=0)
        for f in AdaptivePaths._fields
        if f != "iterations"
    }
    return AdaptivePaths(**fields, iterations=sum(r.iterations for _, r in parts))
