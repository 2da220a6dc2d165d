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

from ._batch import check_noise, compute_dtype, place_model
from .models import call_model, prepare_model
from .noise import NoiseSchedule
from .sampler import schedule_step_times
from .schedule import Schedule, baseline_schedule, check_nfe
from .solvers import Solver, dpmpp2m

__all__ = ["local_error_schedule", "trajectory", "accurate_steps"]


def accurate_steps(grid: NoiseSchedule, steps: int | None = None, name: str = "steps") -> int:
    """Steps of an accurate solve on ``grid``: ``steps`` checked, or by default
    ``min(K, 500)`` (shared by the reference solve and the trajectories)."""
    return min(grid.K, 500) if steps is None else check_nfe(steps, grid.K, name)


def _trajectory_scan(model, noise, times, solver: Solver, slots, n_kept: int):
    """Like the sampler's scan, keeping the state before step ``i`` in ``slots[i]`` (-1: not kept)."""
    B = noise.shape[0]
    cdt = compute_dtype(noise.dtype)

    def body(carry, inp):
        x, state, kept = carry
        st, slot = inp
        at = jnp.maximum(slot, 0)
        kept = jax.lax.dynamic_update_index_in_dim(kept, jnp.where(slot >= 0, x, kept[at]), at, 0)
        eps = call_model(model, x, jnp.full((B,), st.t, jnp.int32))
        x_next, state = solver.step(state, x.astype(cdt), eps.astype(cdt), st)
        return (x_next.astype(noise.dtype), state, kept), None

    kept = jnp.zeros((n_kept, *noise.shape), noise.dtype)
    (x, _, kept), _ = jax.lax.scan(body, (noise, solver.init(noise.astype(cdt)), kept), (times, slots))
    return kept, x


_trajectory_scan_jit = jax.jit(_trajectory_scan, static_argnames=("n_kept",))


def trajectory(model, grid: NoiseSchedule, noise: jax.Array, *, steps: int | None = None, points: int = 100):
    """Accurate trajectories of ``noise``, kept at coarse grid points.

    Args:
      model: ``model(x, t) -> eps``.
      grid: the noise schedule (``K`` points); ``noise`` sits at its point ``K - 1``.
      noise: ``(B, ...)``.
      steps: DPM-Solver++(2M) steps, uniformly spaced on ``grid`` (default ``min(K, 500)``).
      points: about how many of those points to keep (every ``steps // points``-th).
    Returns:
      ``(indices, states, endpoint)``: ``(G,)`` grid indices of the kept points (the first
      is ``K - 1``), ``(G, B, ...)`` the states there, ``(B, ...)`` the clean endpoint (the
      same as :func:`rbe_jax.reference_solution` with these ``steps``).
    """
    steps = accurate_steps(grid, steps)
    noise = check_noise(noise)
    model = place_model(prepare_model(model), noise)
    sched = baseline_schedule(grid, steps, "uniform")
    stride = max(1, steps // max(1, points))
    keep = np.arange(0, steps, stride)
    slots = np.full(steps, -1, np.int32)
    slots[keep] = np.arange(keep.size, dtype=np.int32)
    times = schedule_step_times(sched, compute_dtype(noise.dtype))
    kept, end = _trajectory_scan_jit(model, noise, times, dpmpp2m(), jnp.asarray(slots), n_kept=int(keep.size))
    return np.asarray(sched.indices)[keep], kept, end


def _one_step_errors(model, states, endpoint, t, alpha, sigma):
    """``(G, G + 1, B)`` per-sample RMS error of one DDIM step from kept point ``i`` to every
    kept point ``j`` (and clean data, the last column), against the trajectory there; only
    ``j > i`` is meaningful."""
    B = states.shape[1]
    cdt = compute_dtype(states.dtype)
    targets = jnp.concatenate([states, endpoint[None]]).astype(cdt)  # (G + 1, B, ...)
    a_to = jnp.append(alpha, 1.0).astype(cdt)
    s_to = jnp.append(sigma, 0.0).astype(cdt)

    def row(_, inp):
        x, ti, ai, si = inp
        x = x.astype(cdt)
        eps = call_model(model, x, jnp.full((B,), ti, jnp.int32)).astype(cdt)
        x0 = (x - si * eps) / ai
        pred = jax.vmap(lambda a, s: a * x0 + s * eps)(a_to, s_to)
        d = (pred - targets).reshape(targets.shape[0], B, -1)
        return None, jnp.sqrt(jnp.mean(d * d, axis=-1))

    _, err = jax.lax.scan(row, None, (states, t, alpha.astype(cdt), sigma.astype(cdt)))
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
      model: ``model(x, t) -> eps``.
      grid: the noise schedule whose points the steps may use (``K`` points).
      noise: ``(B, ...)`` calibration noise at grid point ``K - 1``.
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
    noise = check_noise(noise)
    model = place_model(prepare_model(model), noise)
    solve_evals = 0
    if kept is None:
        steps = accurate_steps(grid, steps)
        kept = trajectory(model, grid, noise, steps=steps, points=max(points, nfe))
        solve_evals = steps
    indices, states, endpoint = kept
    if indices.size < nfe:
        raise ValueError(f"nfe={nfe} needs at least {nfe} kept trajectory points, got {indices.size}")
    ab = grid.alpha_bar[indices]
    err = np.asarray(_one_step_errors_jit(model, states, endpoint, jnp.asarray(grid.timesteps[indices], jnp.int32),
                                          jnp.asarray(np.sqrt(ab)), jnp.asarray(np.sqrt(1.0 - ab))), np.float64)
    cost = err.mean(axis=-1)  # (G, G + 1)
    path = _best_path(cost, nfe)
    idx = np.append(indices, -1)[path]
    info = dict(points=int(indices.size), local_error=float(cost[path[:-1], path[1:]].sum()), model_evals=solve_evals + int(indices.size), batch=int(noise.shape[0]))
    return Schedule.from_indices(grid, idx, method="local_dp", info=info)
