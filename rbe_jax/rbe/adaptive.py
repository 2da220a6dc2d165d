"""Per-sample adaptive paths: every sample takes its own error-bounded steps on the grid.

Two step-size rules, each one jit-compiled ``lax.while_loop`` over the whole batch; a sample
that reached clean data (index ``-1``) is masked: its state no longer changes.

- :func:`adaptive_paths`: the seed's RBE rule (faithful): DDIM steps whose backward error
  (one VJP per step) stays below ``tau``.
- :func:`local_error_paths`: RBE driven by a second-order solver's local error instead:
  DPM-Solver++(2M) steps, each accepted when the estimated local error of that step stays
  below ``tol`` and retried shorter otherwise (no gradients; rejected trials cost model
  evaluations during calibration only).

Both run in the VP scaling on any family's grid (the noise is scaled to the process's prior
first).  A grid whose noisiest point is pure noise (flow at ``t = 1``, zero terminal SNR) is
left with one exact DDIM step to the next grid point, ``x' = sigma' x + alpha' x0``, before
the rule takes over: every path then begins ``K - 1, K - 2``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..core._batch import compute_dtype, nonfinite_rows, per_sample
from .error_bound import backward_error, check_tau, step_size
from ..core.models import Prediction
from ..core.noise import NoiseSchedule, Point
from ..core.sampler import prepare_denoiser
from ..core.solvers import DPMState, StepTimes, ddim_update, dpmpp2m

__all__ = ["AdaptivePaths", "adaptive_paths", "local_error_paths"]


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
      iterations: scalar int32, loop iterations run (each a batched forward pass, with a
        VJP for the backward-error rule; the step out of pure noise counts as one).
      evals: ``(B,)`` int32 model evaluations spent on each sample (with the local-error
        rule, rejected trial steps included).
    """

    paths: jax.Array
    samples: jax.Array
    nfe: jax.Array
    finished: jax.Array
    nonfinite_step: jax.Array
    nonfinite_index: jax.Array
    iterations: jax.Array
    evals: jax.Array


class _LoopState(NamedTuple):
    """Carry of the adaptive loop."""

    step: jax.Array  # scalar int32: iterations run
    idx: jax.Array  # (B,) int32 current grid index (-1: finished)
    x: jax.Array  # (B, ...) current samples
    paths: jax.Array  # (B, K + 1) int32 index paths so far, padded with -1
    nfe: jax.Array  # (B,) int32 steps taken
    bad_step: jax.Array  # (B,) int32 first step with a non-finite value (-1: none)
    bad_index: jax.Array  # (B,) int32 grid index at that step


def _result(s, evals: jax.Array) -> AdaptivePaths:
    """The :class:`AdaptivePaths` of a finished loop's carry (either rule's)."""
    return AdaptivePaths(
        paths=s.paths,
        samples=s.x,
        nfe=s.nfe,
        finished=s.idx < 0,
        nonfinite_step=s.bad_step,
        nonfinite_index=s.bad_index,
        iterations=s.step,
        evals=evals,
    )


def _at(pts: Point, k: jax.Array) -> Point:
    """The grid points ``k`` ``(B,)`` of the grid tables ``pts`` ``(K,)``."""
    return Point(*(v[k] for v in pts))


def _leave_pure_noise(model, pts: Point, x: jax.Array):
    """One exact DDIM step from the pure-noise grid point ``K - 1`` to ``K - 2`` (``x' =
    sigma' x + alpha' x0``); ``pts``: ``(K,)`` grid tables in the compute dtype."""
    K = pts.lam.shape[0]
    B = x.shape[0]
    cdt = pts.alpha.dtype
    x0 = model(x, _at(pts, jnp.full((B,), K - 1))).x0.astype(cdt)
    x_new = pts.sigma[K - 2] * x.astype(cdt) + pts.alpha[K - 2] * x0
    return x_new.astype(x.dtype), nonfinite_rows(x0) | nonfinite_rows(x_new)


def _start(model, pts: Point, noise: jax.Array, pure: bool):
    """``(x, non-finite rows)``: the noise scaled to the process's prior at the grid's
    noisiest point and, if that point is pure noise (``pure``), moved one exact step to grid
    point ``K - 2``."""
    x = model.process.start(noise, pts.sigma[-1])
    if not pure:
        return x, jnp.zeros((noise.shape[0],), bool)
    return _leave_pure_noise(model, pts, x)


def _adaptive_loop(model, pts: Point, x, start, alpha_bar_ext, tau, max_steps) -> AdaptivePaths:
    """The jitted core.  Every argument but the model's structure is traced, so one
    compilation serves every threshold and step cap for a given (model, grid size, batch
    shape, dtype); ``paths`` has room for the longest possible path, ``(B, K + 1)``.  ``x``:
    the samples at grid index ``start`` (``K - 1``, or ``K - 2`` after the step out of pure
    noise)."""
    B = x.shape[0]
    K = pts.lam.shape[0]
    cdt = compute_dtype(x.dtype)
    ext = alpha_bar_ext.astype(cdt)
    tau = jnp.asarray(tau, cdt)
    off = (start < K - 1).astype(jnp.int32)  # 1 after the step out of pure noise
    paths = jnp.full((B, K + 1), -1, jnp.int32).at[:, 0].set(K - 1)
    init = _LoopState(
        step=jnp.zeros((), jnp.int32),
        idx=jnp.full((B,), start, jnp.int32),
        x=x,
        paths=jnp.where(off > 0, paths.at[:, 1].set(start), paths),
        nfe=jnp.full((B,), off, jnp.int32),
        bad_step=jnp.full((B,), -1, jnp.int32),
        bad_index=jnp.full((B,), -1, jnp.int32),
    )

    def cond(s: _LoopState):
        return (s.step + off < max_steps) & jnp.any(s.idx >= 0)

    def body(s: _LoopState):
        active = s.idx >= 0
        k = jnp.maximum(s.idx, 0)  # finished samples are evaluated at grid point 0, then masked
        a, a_next = ext[k + 1], ext[k]
        x = s.x.astype(cdt)
        be = backward_error(model, x, _at(pts, k), a, a_next)
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
            paths=jax.lax.dynamic_update_slice(s.paths, new_idx[:, None], (jnp.int32(0), s.step + 1 + off)),
            nfe=s.nfe + active.astype(jnp.int32),
            bad_step=jnp.where(first_bad, s.step + off, s.bad_step),
            bad_index=jnp.where(first_bad, s.idx, s.bad_index),
        )

    s = jax.lax.while_loop(cond, body, init)
    return _result(s._replace(step=s.step + off), evals=s.nfe)  # one forward pass and one VJP per step


_adaptive_loop_jit = jax.jit(_adaptive_loop)
_start_jit = jax.jit(_start, static_argnames=("pure",))


def adaptive_paths(model, grid: NoiseSchedule, noise: jax.Array, tau, max_steps: int | None = None, chunk_size: int | None = None) -> AdaptivePaths:
    """Runs the adaptive RBE rule for every sample from the noisiest grid point to clean data.

    At each step a sample at grid index ``k`` evaluates eps and the backward-error
    indicator (one forward pass + one VJP), takes ``h = min(sqrt(tau/||g||), 1 - a_k)``,
    snaps down to the grid (at least one grid step) and moves there with DDIM, reusing eps.

    Args:
      model: the model (see :func:`rbe_jax.rbe_sample`): a :class:`rbe_jax.core.models.Denoiser`
        or an eps model of ``grid``'s noise process.
      grid: the (respaced) :class:`NoiseSchedule` of ``K`` points.
      noise: ``(B, ...)`` standard-normal noise (scaled to the process's prior inside).
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
    den, noise, max_steps = _checked(model, grid, noise, tau, max_steps)
    return backward_error_run(den, grid, noise, tau, max_steps, chunk_size)


def backward_error_run(den, grid: NoiseSchedule, noise: jax.Array, tau, max_steps: int, chunk_size: int | None = None) -> AdaptivePaths:
    """:func:`adaptive_paths` for a prepared ``den`` and checked arguments (no checks)."""
    ext = jnp.asarray(grid.alpha_bar_ext, compute_dtype(noise.dtype))
    cap = jnp.asarray(max_steps, jnp.int32)
    return _run(_adaptive_loop_jit, den, grid, noise, chunk_size, max_steps, ext, tau, cap)


def _checked(model, grid: NoiseSchedule, noise, threshold, max_steps):
    """Both rules' public edge: ``(model in the internal form, placed for the noise; noise;
    max_steps)``."""
    if not isinstance(grid, NoiseSchedule):
        raise TypeError(f"grid must be a NoiseSchedule, got {type(grid).__name__}")
    check_tau(threshold)
    max_steps = grid.K if max_steps is None else int(max_steps)
    if not 1 <= max_steps <= grid.K:
        raise ValueError(f"max_steps must satisfy 1 <= max_steps <= K = {grid.K} (no path is longer), got {max_steps}")
    den, noise = prepare_denoiser(model, noise, grid, grid.log_snr[-1])
    if grid.alpha_bar[-1] == 0.0 and grid.K < 3:
        raise ValueError("a grid that starts at pure noise needs K >= 3 points")
    return den, noise, max_steps


def _run(loop, model, grid: NoiseSchedule, noise, chunk_size, max_steps, *args) -> AdaptivePaths:
    """Either rule's jitted ``loop(model, pts, x, start, *args)`` over the batch in chunks,
    each chunk started by :func:`_start`; a non-finite step out of pure noise is recorded as
    step 0 at grid index ``K - 1``."""
    pure = bool(grid.alpha_bar[-1] == 0.0)
    pts = Point(*(jnp.asarray(v, compute_dtype(noise.dtype)) for v in grid.grid_points()))

    def run(z):
        x, bad = _start_jit(model, pts, z, pure)
        res = loop(model, pts, x, jnp.int32(grid.K - 1 - pure), *args)
        return res._replace(
            nonfinite_step=jnp.where(bad, 0, res.nonfinite_step),
            nonfinite_index=jnp.where(bad, grid.K - 1, res.nonfinite_index),
        )

    return _chunked(run, noise, chunk_size, max_steps)


def _chunked(run, noise: jax.Array, chunk_size: int | None, max_steps: int) -> AdaptivePaths:
    """``run(x) -> AdaptivePaths`` over the batch in chunks of ``chunk_size`` samples (one
    compilation: the last chunk is padded with copies of the first rows), paths cut to
    ``max_steps + 1`` columns; ``iterations`` is summed over chunks."""
    B = noise.shape[0]
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    chunk = B if chunk_size is None else min(int(chunk_size), B)

    def cut(r: AdaptivePaths) -> AdaptivePaths:
        return r._replace(paths=r.paths[:, : max_steps + 1])

    if chunk == B:
        return cut(run(noise))
    parts = []
    for start in range(0, B, chunk):
        x = noise[start : start + chunk]
        n = x.shape[0]
        if n < chunk:
            x = jnp.concatenate([x, noise[: chunk - n]], axis=0)
        parts.append((n, cut(run(x))))
    fields = {
        f: jnp.concatenate([getattr(r, f)[:n] for n, r in parts], axis=0)
        for f in AdaptivePaths._fields
        if f != "iterations"
    }
    return AdaptivePaths(**fields, iterations=sum(r.iterations for _, r in parts))


# ---------------------------------------------------------------------------------------
# RBE driven by a second-order solver's local error
# ---------------------------------------------------------------------------------------

SAFETY = 0.9  # aim a little below the tolerance when proposing the next step
MAX_GROWTH = 10.0  # a step at most this many times longer (in half-log-SNR) than the last
MIN_SHRINK = 0.1  # a rejected step is retried at least this long (and always shorter)
FIRST_TRIAL = 0.5  # the first trial step goes to this fraction of the grid


def _psi1(h):
    """``int_0^h exp(-(h - u)) u du``."""
    return h + jnp.expm1(-h)


def _psi2(h):
    """``int_0^h exp(-(h - u)) u^2 du``."""
    return h * h - 2.0 * h - 2.0 * jnp.expm1(-h)


def _rms(v: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.mean(jnp.square(v), axis=tuple(range(1, v.ndim))))


class _LocalState(NamedTuple):
    """Carry of the local-error loop (per-sample arrays are ``(B,)`` or ``(B, ...)``)."""

    step: jax.Array  # scalar int32: iterations run
    idx: jax.Array  # current grid index (-1: finished)
    trial: jax.Array  # grid index the next trial step goes to (-1: clean data)
    x: jax.Array  # sample at idx
    pred: Prediction  # the model's prediction there (compute dtype)
    x0_prev: jax.Array  # x0 prediction at the previous accepted point
    lam_prev: jax.Array  # half-log-SNR there
    has_prev: jax.Array  # bool: a previous point exists
    paths: jax.Array  # (B, K + 1) int32 accepted index paths, padded with -1
    nfe: jax.Array  # int32 accepted steps
    evals: jax.Array  # int32 model evaluations (trials included)
    bad_step: jax.Array  # int32 first iteration with a non-finite value (-1: none)
    bad_index: jax.Array  # int32 grid index of that evaluation


def _snap(lam_grid: jax.Array, goal: jax.Array, below: jax.Array) -> jax.Array:
    """The grid index with the largest half-log-SNR not above ``goal``, at most ``below - 1``
    (``lam_grid`` ``(K,)`` decreases with the index)."""
    count = jnp.sum(lam_grid[None, :] > goal[:, None], axis=1).astype(jnp.int32)
    return jnp.minimum(count, below - 1)


def _local_error_loop(model, pts: Point, x, start, tol, max_steps, max_iters) -> AdaptivePaths:
    """The jitted core of :func:`local_error_paths`; ``pts``: ``(K,)`` grid tables, ``x`` the
    samples at grid index ``start``, every argument but the model's structure traced."""
    K = pts.lam.shape[0]
    cdt = compute_dtype(x.dtype)
    tabs = Point(*(v.astype(cdt) for v in pts))
    tol = jnp.asarray(tol, cdt)
    off = (start < K - 1).astype(jnp.int32)  # 1 after the step out of pure noise
    init = _local_error_init(model, tabs, x, start, off)

    def cond(s: _LocalState):
        return (s.step < max_iters) & jnp.any(_running(s, max_steps))

    s = jax.lax.while_loop(cond, lambda s: _local_error_step(model, tabs, tol, max_steps, s), init)
    return _result(s._replace(step=s.step + off), evals=s.evals)


def _running(s: _LocalState, max_steps) -> jax.Array:
    """``(B,)``: the samples still stepping (not finished, under the cap, all finite)."""
    return (s.idx >= 0) & (s.nfe < max_steps) & (s.bad_step < 0)


def _local_error_init(model, tabs: Point, x, start, off) -> _LocalState:
    """The carry at grid index ``start`` (the model evaluated there once)."""
    B, K = x.shape[0], tabs.lam.shape[0]
    top = jnp.full((B,), start, jnp.int32)
    pred = model(x.astype(tabs.lam.dtype), _at(tabs, top))
    bad0 = nonfinite_rows(pred.eps)
    paths = jnp.full((B, K + 1), -1, jnp.int32).at[:, 0].set(K - 1)
    return _LocalState(
        step=jnp.zeros((), jnp.int32),
        idx=top,
        trial=jnp.minimum(jnp.full((B,), int(FIRST_TRIAL * K), jnp.int32), top - 1),
        x=x,
        pred=Prediction(eps=pred.eps.astype(tabs.lam.dtype), x0=pred.x0.astype(tabs.lam.dtype)),
        x0_prev=jnp.zeros(x.shape, tabs.lam.dtype),
        lam_prev=jnp.zeros((B,), tabs.lam.dtype),
        has_prev=jnp.zeros((B,), bool),
        paths=jnp.where(off > 0, paths.at[:, 1].set(start), paths),
        nfe=jnp.full((B,), off, jnp.int32),
        evals=jnp.full((B,), 1 + off, jnp.int32),
        bad_step=jnp.where(bad0, 0, -1).astype(jnp.int32),
        bad_index=jnp.where(bad0, top, -1).astype(jnp.int32),
    )


class _Trial(NamedTuple):
    """A trial step of every sample from its grid point ``k`` to ``j`` (``-1``: clean data)."""

    j: jax.Array  # (B,) target index
    jc: jax.Array  # max(j, 0): where the model is evaluated
    final: jax.Array  # (B,) bool: the step to clean data
    h: jax.Array  # (B,) its length in half-log-SNR (1 for the final step: unused there)
    x: jax.Array  # the sample at j
    pred: Prediction  # the model's prediction there
    est: jax.Array  # (B,) the step's estimated local error


def _trial(model, tabs: Point, s: _LocalState) -> _Trial:
    """The DPM-Solver++(2M) step itself (first order without a previous point, x0 on the
    step to clean data) and its local error: the quadratic (first order: linear) term of x0
    along the step that the step leaves out, from divided differences in half-log-SNR,
    weighted by the exponential integrator's kernel."""
    k, j = jnp.maximum(s.idx, 0), s.trial
    final = j < 0
    jc = jnp.maximum(j, 0)
    lk, lj = tabs.lam[k], tabs.lam[jc]
    h = jnp.where(final, 1.0, lj - lk)  # finite in the unused branch
    h0 = jnp.where(s.has_prev, lk - s.lam_prev, 1.0)
    x = s.x.astype(tabs.lam.dtype)
    times = StepTimes(*(per_sample(v, x) for v in (
        tabs.alpha[k], tabs.sigma[k], lk,
        jnp.where(final, 1.0, tabs.alpha[jc]), jnp.where(final, 0.0, tabs.sigma[jc]), jnp.where(final, jnp.inf, lj),
        jnp.zeros_like(k),
    )))
    state = DPMState(x0_prev=s.x0_prev, h_prev=per_sample(h0, x), has_prev=per_sample(s.has_prev, x))
    xt, _ = dpmpp2m().step(state, x, s.pred, times)
    pred = model(xt, _at(tabs, jc))
    pred = Prediction(eps=pred.eps.astype(x.dtype), x0=pred.x0.astype(x.dtype))
    d1 = (pred.x0 - s.pred.x0) / per_sample(h, x)
    dd2 = (d1 - (s.pred.x0 - s.x0_prev) / per_sample(h0, x)) / per_sample(h + h0, x)
    est = tabs.alpha[jc] * jnp.where(s.has_prev, _rms(dd2) * (_psi2(h) + h0 * _psi1(h)), _rms(d1) * _psi1(h))
    return _Trial(j, jc, final, h, xt, pred, est)


def _local_error_step(model, tabs: Point, tol, max_steps, s: _LocalState) -> _LocalState:
    """One iteration: every running sample tries its step, accepts or retries it shorter,
    and proposes the next (the controller of :func:`local_error_paths`)."""
    B, K = s.x.shape[0], tabs.lam.shape[0]
    active = _running(s, max_steps)
    k = jnp.maximum(s.idx, 0)
    tr = _trial(model, tabs, s)
    j, jc, final, h = tr.j, tr.jc, tr.final, tr.h
    bad = active & ~final & (nonfinite_rows(tr.pred.eps) | ~jnp.isfinite(tr.est))
    accept = active & ~bad & (final | (tr.est <= tol) | (j == k - 1))
    reject = active & ~bad & ~accept
    order = jnp.where(s.has_prev, 3.0, 2.0)
    factor = jnp.clip(SAFETY * (tol / jnp.maximum(tr.est, jnp.finfo(tol.dtype).tiny)) ** (1.0 / order), MIN_SHRINK, MAX_GROWTH)
    # after an accepted step: go to clean data when the x0 prediction, extrapolated linearly
    # in sigma down to 0, moves by at most tol; else propose the next step
    dsig = per_sample(tabs.sigma[k] - tabs.sigma[jc], tr.x)
    done_err = tabs.sigma[jc] * _rms((tr.pred.x0 - s.pred.x0) / dsig)
    after = jnp.where((done_err <= tol) | (j == 0), -1, _snap(tabs.lam, tabs.lam[jc] + h * factor, jc))
    retry = jnp.clip(_snap(tabs.lam, tabs.lam[k] + h * jnp.minimum(factor, SAFETY), k), j + 1, k - 1)
    acc = per_sample(accept, tr.x)
    keep = acc & ~per_sample(final, tr.x)
    col = jnp.where(accept, s.nfe + 1, K)  # column K is padding only a finished path reaches
    rows = jnp.arange(B)
    return _LocalState(
        step=s.step + 1,
        idx=jnp.where(accept, j, s.idx),
        trial=jnp.where(accept, jnp.where(final, -1, after), jnp.where(reject, retry, s.trial)).astype(jnp.int32),
        x=jnp.where(acc, tr.x.astype(s.x.dtype), s.x),
        pred=Prediction(eps=jnp.where(keep, tr.pred.eps, s.pred.eps), x0=jnp.where(keep, tr.pred.x0, s.pred.x0)),
        x0_prev=jnp.where(acc, s.pred.x0, s.x0_prev),
        lam_prev=jnp.where(accept, tabs.lam[k], s.lam_prev),
        has_prev=s.has_prev | accept,
        paths=s.paths.at[rows, col].set(jnp.where(accept, j, s.paths[rows, col])),
        nfe=s.nfe + accept.astype(jnp.int32),
        evals=s.evals + (active & ~final).astype(jnp.int32),
        bad_step=jnp.where(bad & (s.bad_step < 0), s.step + 1, s.bad_step),
        bad_index=jnp.where(bad & (s.bad_step < 0), j, s.bad_index),
    )


_local_error_loop_jit = jax.jit(_local_error_loop)


def local_error_paths(model, grid: NoiseSchedule, noise: jax.Array, tol, max_steps: int | None = None, chunk_size: int | None = None) -> AdaptivePaths:
    """Per-sample adaptive paths whose steps bound a second-order solver's local error.

    Every sample steps with DPM-Solver++(2M) (first order on its first step, x0 on the
    step to clean data).  A trial step from grid point ``k`` to ``j`` evaluates the model
    at ``j`` (which the next step needs anyway) and estimates the step's local error from
    the x0 predictions at the last three points: ``alpha_j * rms(x0[l_p, l_k, l_j]) *
    int_0^h exp(-(h-u)) u (u + h_0) du``, the quadratic term of x0 in half-log-SNR that the
    step's linear extrapolation leaves out (``h = l_j - l_k``, ``h_0 = l_k - l_p``; on the
    first step the linear term, ``rms(x0[l_k, l_j]) int exp(-(h-u)) u du``).  The step is
    accepted if the estimate is at most ``tol`` (or ``j`` is the next grid point) and
    retried shorter otherwise; the next trial is the usual controller's
    ``h * 0.9 (tol / est)^(1/(p+1))`` (clipped to ``[0.1, 10] h``), snapped down to the
    grid.  A sample goes to clean data once its x0 prediction, extrapolated linearly in
    sigma down to 0, moves by at most ``tol``.  ``tol`` is an RMS distance per element of
    the sample, in the data's units.

    Unlike the backward-error rule (:func:`adaptive_paths`) there is no gradient; a
    rejected trial costs a model evaluation during calibration only (``evals``).

    Args:
      model: the model, as in :func:`adaptive_paths`.
      grid: the (respaced) :class:`NoiseSchedule` of ``K`` points.
      noise: ``(B, ...)`` standard-normal noise.
      tol: local-error tolerance, > 0 (may be traced).
      max_steps: accepted steps after which a sample stops unfinished (default ``K``).
      chunk_size: as in :func:`adaptive_paths`.
    Returns:
      :class:`AdaptivePaths` (``iterations``: trial steps of the batch, each one batched
      forward pass).
    """
    den, noise, max_steps = _checked(model, grid, noise, tol, max_steps)
    return local_error_run(den, grid, noise, tol, max_steps, chunk_size)


def local_error_run(den, grid: NoiseSchedule, noise: jax.Array, tol, max_steps: int, chunk_size: int | None = None) -> AdaptivePaths:
    """:func:`local_error_paths` for a prepared ``den`` and checked arguments (no checks)."""
    cap = jnp.asarray(max_steps, jnp.int32)
    iters = jnp.asarray(8 * max_steps + 16, jnp.int32)  # every step ends within a few trials
    return _run(_local_error_loop_jit, den, grid, noise, chunk_size, max_steps, tol, cap, iters)
