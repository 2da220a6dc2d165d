"""Schedules from measured local errors: a dynamic program over a coarse set of grid points
(the idea of GITS, Chen et al. 2024, "A geometric perspective on diffusion models").

Accurate trajectories of a calibration batch are solved once (DPM-Solver++(2M) over many
grid points); their states are kept at ``G`` coarse points.  The local error of one DDIM
step from the trajectory's state at coarse point ``i`` to coarse point ``j`` (or to clean
data) is measured against the trajectory's state at ``j`` for every pair, with one model
evaluation per coarse point; a dynamic program then picks the path of exactly ``nfe`` steps
with the smallest total local error.  Cost: the trajectory solve (``steps`` evaluations
per sample) plus ``G``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..core._batch import compute_dtype
from ..core.noise import NoiseSchedule, Point
from ..core.sampler import _scan_jit, prepare_denoiser, prepare_sampling
from ..core.schedule import Schedule, check_nfe, grid_schedule
from ..core.solvers import dpmpp2m

__all__ = ["local_error_schedule", "trajectory", "accurate_steps"]


def accurate_steps(grid: NoiseSchedule, steps: int | None = None, name: str = "steps") -> int:
    """Steps of an accurate solve on ``grid``: ``steps`` checked, or by default
    ``min(K, 500)`` (shared by the reference solve and the trajectories)."""
    return min(grid.K, 500) if steps is None else check_nfe(steps, grid.K, name)


def trajectory(model, grid: NoiseSchedule, noise: jax.Array, *, steps: int | None = None, points: int = 100):
    """Accurate trajectories of ``noise``, kept at coarse grid points.

    Args:
      model: the model (see :func:`rbe_jax.rbe_sample`).
      grid: the noise schedule (``K`` points); the solve starts at its point ``K - 1``.
      noise: ``(B, ...)`` standard-normal noise.
      steps: DPM-Solver++(2M) steps, uniformly spaced on ``grid``'s indices (default
        ``min(K, 500)``).
      points: about how many of those points to keep (every ``steps // points``-th).
    Returns:
      ``(indices, states, endpoint)``: ``(G,)`` grid indices of the kept points (the first
      is ``K - 1``), ``(G, B, ...)`` the states there (VP scaling), ``(B, ...)`` the clean
      endpoint (the same as :func:`rbe_jax.reference_solution` with these ``steps``).
    """
    steps = accurate_steps(grid, steps)
    sched = grid_schedule(grid, steps)
    den, noise, pts = prepare_sampling(model, noise, sched)
    stride = max(1, steps // max(1, points))
    keep = np.arange(0, steps, stride)
    slots = np.full(steps, -1, np.int32)
    slots[keep] = np.arange(keep.size, dtype=np.int32)
    out = _scan_jit(den, noise, pts, dpmpp2m(), jnp.asarray(slots), n_kept=int(keep.size))
    return np.asarray(sched.indices)[keep], out.kept, out.x


def _one_step_errors(model, states, endpoint, pts: Point):
    """``(G, G + 1, B)`` per-sample RMS error of one DDIM step from kept point ``i`` to every
    kept point ``j`` (and clean data, the last column), against the trajectory there; only
    ``j > i`` is meaningful.  ``pts``: the kept points' :class:`Point` tables ``(G,)``."""
    B = states.shape[1]
    cdt = compute_dtype(states.dtype)
    targets = jnp.concatenate([states, endpoint[None]]).astype(cdt)  # (G + 1, B, ...)
    a_to = jnp.append(pts.alpha, 1.0).astype(cdt)
    s_to = jnp.append(pts.sigma, 0.0).astype(cdt)

    def row(_, inp):
        x, pt = inp
        pred = model(x, Point(*(jnp.broadcast_to(v, (B,)) for v in pt)))
        x0, eps = pred.x0.astype(cdt), pred.eps.astype(cdt)
        pred = jax.vmap(lambda a, s: a * x0 + s * eps)(a_to, s_to)
        d = (pred - targets).reshape(targets.shape[0], B, -1)
        return None, jnp.sqrt(jnp.mean(d * d, axis=-1))

    _, err = jax.lax.scan(row, None, (states, Point(*(v.astype(cdt) for v in pts))))
    return err


_one_step_errors_jit = jax.jit(_one_step_errors)


def _best_path(cost: np.ndarray, nfe: int) -> np.ndarray:
    """Node sequence ``0 = n_0 < ... < n_nfe = N - 1`` minimising the summed ``cost[n_k, n_k+1]``
    over an ``(N - 1, N)`` cost matrix (row: from, column: to)."""
    G, N = cost.shape
    best = np.full((nfe + 1, N), np.inf)
    came = np.zeros((nfe + 1, N), np.int64)
    best[0, 0] = 0.0
    upper = np.triu(np.ones((G, N), bool), k=1)  # only toward less noise
    c = np.where(upper, cost, np.inf)
    for k in range(1, nfe + 1):
        total = best[k - 1, :G, None] + c  # (from, to)
        came[k] = np.argmin(total, axis=0)
        best[k] = total[came[k], np.arange(N)]
    path = [N - 1]
    for k in range(nfe, 0, -1):
        path.append(came[k, path[-1]])
    return np.asarray(path[::-1])


def local_error_schedule(
    model,
    grid: NoiseSchedule,
    noise: jax.Array,
    nfe: int,
    *,
    steps: int | None = None,
    points: int = 100,
    kept: tuple | None = None,
) -> Schedule:
    """The schedule of exactly ``nfe`` steps whose summed one-step (DDIM) local errors along
    accurate trajectories of ``noise`` are smallest (mean over samples of each step's
    per-sample RMS error).

    Args:
      model: the model (see :func:`rbe_jax.rbe_sample`).
      grid: the noise schedule whose points the steps may use (``K`` points).
      noise: ``(B, ...)`` standard-normal calibration noise.
      nfe: steps, ``1 <= nfe``; at most the number of kept points.
      steps: steps of the trajectory solve (default ``min(K, 500)``).
      points: about how many trajectory points the schedule may use (default 100; raised to
        ``nfe`` when smaller).
      kept: the output of :func:`trajectory` for this model, grid and noise, to reuse a solve.
    Returns:
      A :class:`Schedule` with ``method="local_dp"`` and in ``info``: ``points`` (kept),
      ``local_error`` (the minimised sum), ``model_evals`` (per sample) and ``batch``.
    """
    nfe = check_nfe(nfe, grid.K)
    den, noise = prepare_denoiser(model, noise, grid, grid.log_snr[-1])
    solve_evals = 0
    if kept is None:
        steps = accurate_steps(grid, steps)
        kept = trajectory(den, grid, noise, steps=steps, points=max(points, nfe))
        solve_evals = steps
    indices, states, endpoint = kept
    if indices.size < nfe:
        raise ValueError(f"nfe={nfe} needs at least {nfe} kept trajectory points, got {indices.size}")
    pts = Point(*(jnp.asarray(v[indices]) for v in grid.grid_points()))
    err = np.asarray(_one_step_errors_jit(den, states, endpoint, pts), np.float64)
    cost = err.mean(axis=-1)  # (G, G + 1)
    path = _best_path(cost, nfe)
    idx = np.append(indices, -1)[path]
    info = dict(points=int(indices.size), local_error=float(cost[path[:-1], path[1:]].sum()), model_evals=solve_evals + int(indices.size), batch=int(noise.shape[0]))
    return Schedule.from_indices(grid, idx, method="local_dp", info=info)
