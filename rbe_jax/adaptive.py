"""Per-sample adaptive RBE paths: every sample takes its own backward-error-bounded steps.

One jit-compiled ``lax.while_loop`` advances the whole batch; a sample that reached clean
data (index ``-1``) is masked: its state no longer changes.  The loop ends when every sample
is finished or after ``max_steps`` iterations.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .backward_error import backward_error, check_tau, step_size
from .models import check_model_output, ensure_model
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
      nonfinite_step: ``(B,)`` int32, the first step at which the model returned NaN/Inf for
        that sample (``-1``: never).
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


def check_noise(noise) -> jax.Array:
    """Validates a batch of starting noise ``(B, ...)``; returns it as a JAX array."""
    if not hasattr(noise, "shape") or not hasattr(noise, "dtype"):
        raise TypeError(f"noise must be an array of shape (B, ...), got {type(noise).__name__}")
    if len(noise.shape) < 2:
        raise ValueError(f"noise must have shape (B, ...) with at least 2 dimensions, got {tuple(noise.shape)}")
    if noise.shape[0] < 1:
        raise ValueError("noise has an empty batch")
    if not jnp.issubdtype(noise.dtype, jnp.floating):
        raise TypeError(f"noise must be floating point, got dtype {noise.dtype}")
    return jnp.asarray(noise)


@functools.partial(jax.jit, static_argnames=("max_steps",))
def _adaptive_loop(model, alpha_bar_ext, timesteps, noise, tau, max_steps: int) -> AdaptivePaths:
    B = noise.shape[0]
    K = timesteps.shape[0]
    ext = alpha_bar_ext.astype(noise.dtype)
    tau = jnp.asarray(tau, noise.dtype)
    paths = jnp.full((B, max_steps + 1), -1, jnp.int32).at[:, 0].set(K - 1)
    init = dict(
        step=jnp.zeros((), jnp.int32),
        idx=jnp.full((B,), K - 1, jnp.int32),
        x=noise,
        paths=paths,
        nfe=jnp.zeros((B,), jnp.int32),
        bad_step=jnp.full((B,), -1, jnp.int32),
        bad_index=jnp.full((B,), -1, jnp.int32),
    )

    def cond(s):
        return (s["step"] < max_steps) & jnp.any(s["idx"] >= 0)

    def body(s):
        idx = s["idx"]
        active = idx >= 0
        k = jnp.maximum(idx, 0)  # finished samples are evaluated at grid point 0, then masked
        a, a_next = ext[k + 1], ext[k]
        be = backward_error(model, s["x"], timesteps[k], a, a_next)
        nxt = step_size(be.indicator, k, ext, tau).next_index
        x_new = ddim_update(s["x"], be.eps, a, ext[nxt + 1])
        mask = active.reshape((-1,) + (1,) * (noise.ndim - 1))
        new_idx = jnp.where(active, nxt, idx)
        finite = jnp.all(jnp.isfinite(be.eps).reshape(B, -1), axis=1)
        first_bad = active & ~finite & (s["bad_step"] < 0)
        return dict(
            step=s["step"] + 1,
            idx=new_idx,
            x=jnp.where(mask, x_new, s["x"]),
            paths=jax.lax.dynamic_update_slice(s["paths"], new_idx[:, None], (jnp.int32(0), s["step"] + 1)),
            nfe=s["nfe"] + active.astype(jnp.int32),
            bad_step=jnp.where(first_bad, s["step"], s["bad_step"]),
            bad_index=jnp.where(first_bad, idx, s["bad_index"]),
        )

    s = jax.lax.while_loop(cond, body, init)
    return AdaptivePaths(
        paths=s["paths"],
        samples=s["x"],
        nfe=s["nfe"],
        finished=s["idx"] < 0,
        nonfinite_step=s["bad_step"],
        nonfinite_index=s["bad_index"],
        iterations=s["step"],
    )


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
      max_steps: loop bound (default ``K``, enough for every path).
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
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    model = ensure_model(model)
    B = noise.shape[0]
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    chunk = B if chunk_size is None else min(int(chunk_size), B)
    check_model_output(model, noise[:chunk])
    ext = jnp.asarray(grid.alpha_bar_ext, noise.dtype)
    ts = jnp.asarray(grid.timesteps, jnp.int32)
    if chunk == B:
        return _adaptive_loop(model, ext, ts, noise, tau, max_steps=max_steps)
    parts = []
    for start in range(0, B, chunk):
        x = noise[start : start + chunk]
        n = x.shape[0]
        if n < chunk:  # pad with copies of the first rows: same shape, no new compilation
            x = jnp.concatenate([x, noise[: chunk - n]], axis=0)
        parts.append((n, _adaptive_loop(model, ext, ts, x, tau, max_steps=max_steps)))
    fields = {
        f: jnp.concatenate([getattr(r, f)[:n] for n, r in parts], axis=0)
        for f in AdaptivePaths._fields
        if f != "iterations"
    }
    return AdaptivePaths(**fields, iterations=sum(r.iterations for _, r in parts))
