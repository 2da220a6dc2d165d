"""Schedules made for one model and one solver: :func:`optimize_schedule`.

The RBE rule bounds each step's backward error of first-order DDIM; what a user sees is the
*global* error of the solver that finally runs on the schedule.  :func:`optimize_schedule`
measures that directly, in four steps:

1. :func:`_solve` — accurate endpoints of the calibration noise (a dense DPM-Solver++(2M)
   solve over the grid, unless a ``reference`` is given); the same solve gives the
   trajectories of the local-error start.  With ``validation``, the last part of the noise
   is then held out of steps 2 and 3.
2. :func:`_starts` — candidates: the standard spacings, a power family, the local-error
   dynamic program (:func:`rbe_jax.local_error_schedule`) and any given schedules, as grid
   indices; the start is the one with the lowest RMSE (trimmed, :class:`_Objective`) among
   those whose untrimmed RMSE is within ``full_rmse_cap`` of the lowest.
3. :func:`_descend` — coordinate descent: for move sizes ``K/8, K/16, ..., 1`` grid points,
   each point between pure noise and clean data moves up or down while the strict order
   holds; a move is kept when the whole batch's error drops and neither half's rises (a
   guard against fitting a few samples), repeated up to ``max_sweeps`` times per size.
4. :func:`_guarded` — the result is judged on the held-out part against its starts
   (:func:`rbe_jax.tuning.teacher.pick_guarded`); where it is not surely no worse in RMSE and
   median, the best start is returned instead (``info["selected"]``).

Coordinate moves on a few hundred samples can overfit them; step 4 makes the result safe on
fresh noise, and ``bench/schedules/compare.py`` measures it there.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..core._batch import compute_dtype
from ..core._progress import progress_reporter
from ..core.models import model_noise_schedule
from ..core.noise import NoiseSchedule
from ..core.sampler import _scan_jit, prepare_denoiser, rbe_sample
from ..core.schedule import BASELINES, Schedule, baseline_schedule, check_nfe, grid_indices, grid_schedule, schedule_points, valid_baselines
from ..core.solvers import DEFAULT_SOLVER, Solver, get_solver
from .local_error import accurate_steps, local_error_schedule, trajectory
from .teacher import Teacher, make_teacher, pick_guarded, sample_stats, score_candidates, split

__all__ = ["optimize_schedule", "reference_solution", "schedule_error"]


def reference_solution(model, grid: NoiseSchedule, noise: jax.Array, steps: int | None = None) -> jax.Array:
    """Accurate endpoints of the probability-flow ODE for ``noise``: DPM-Solver++(2M) on
    ``steps`` (default ``min(K, 500)``) evenly spaced indices of ``grid``.  On a full
    1,000-step training table this agrees with a float64 adaptive solve to about 1e-4 on the
    exact Gaussian mixtures of ``rbe_jax.testing``."""
    return make_teacher(model, grid, noise, steps).x


def schedule_error(model, noise, reference, schedule: Schedule, solver=DEFAULT_SOLVER, trim: float = 0.0) -> float:
    """Root-mean-square error of sampling ``noise`` on ``schedule`` with ``solver`` against
    ``reference`` endpoints, over every element of the samples kept: with ``trim > 0`` the
    ``trim`` fraction of samples with the largest errors is left out (samples near a
    boundary between modes can flip under any solver and then dominate the mean).  The
    solver defaults to :data:`rbe_jax.DEFAULT_SOLVER`, as in :func:`rbe_jax.rbe_sample`."""
    x = rbe_sample(model, noise, schedule, solver)
    return _rmse(_mse(x, reference), trim)


def _mse(x, reference) -> np.ndarray:
    """``(B,)`` mean squared error of each sample against the reference."""
    d = (x.astype(jnp.float32) - reference.astype(jnp.float32)).reshape(x.shape[0], -1)
    return np.asarray(jnp.mean(d**2, axis=1), np.float64)


def _rmse(mse: np.ndarray, trim: float) -> float:
    """RMSE over the per-sample MSEs ``mse`` with the ``trim`` share of the largest left out;
    ``inf`` when it is not finite or there is no sample (half of a one-sample batch)."""
    if mse.size == 0:
        return np.inf
    keep = mse.size - int(np.floor(trim * mse.size))
    err = float(np.sqrt(np.mean(np.sort(mse)[:keep])))
    return err if np.isfinite(err) else np.inf


def _on_grid(grid: NoiseSchedule, schedule: Schedule) -> np.ndarray:
    """A schedule's points as indices of ``grid`` (its points must be grid points)."""
    if schedule.meta.noise_schedule is not None and schedule.noise_schedule.process != grid.process:
        raise ValueError(f"candidate schedule ({schedule.method}) belongs to another noise process")
    lam = np.asarray(schedule.lam, np.float64)[:-1]
    glam = grid.log_snr
    pos = np.searchsorted(-glam, -lam)  # glam decreases with the index
    posc = np.minimum(pos, grid.K - 1)
    if np.any(pos >= grid.K) or np.any(glam[posc] != lam):
        raise ValueError(f"candidate schedule ({schedule.method}) has points that are not on the grid")
    return np.append(posc, -1)


def _move_sizes(K: int) -> list[int]:
    sizes, d = [], max(1, K // 8)
    while d >= 1:
        sizes.append(d)
        d //= 2
    return sizes


class _Objective:
    """The search's objective on the fitted samples: for grid indices ``idx``, the RMSE
    with ``trim`` applied over the whole batch, its first half and its second half, and the
    untrimmed RMSE of the whole batch.  Counts the per-sample model evaluations it spends."""

    def __init__(self, den, grid: NoiseSchedule, noise, reference, solver: Solver, trim: float):
        self.den, self.grid, self.noise, self.reference, self.solver, self.trim = den, grid, noise, reference, solver, trim
        self.cdt = compute_dtype(noise.dtype)
        self.evals = 0

    def __call__(self, idx: np.ndarray) -> tuple[float, float, float, float]:
        B, half = self.noise.shape[0], self.noise.shape[0] // 2
        self.evals += (len(idx) - 1) * B
        pts = schedule_points(Schedule.from_indices(self.grid, idx), self.cdt)
        mse = _mse(_scan_jit(self.den, self.noise, pts, self.solver).x, self.reference)
        return _rmse(mse, self.trim), _rmse(mse[:half], self.trim), _rmse(mse[half:], self.trim), _rmse(mse, 0.0)


def _check_options(grid: NoiseSchedule, candidates, max_sweeps: int, trim: float, full_rmse_cap: float) -> tuple[str, ...]:
    """The baseline kinds to start from, after every option is checked."""
    candidates = valid_baselines(grid) if candidates is None else tuple(candidates)
    unknown = [c for c in candidates if c not in BASELINES]
    if unknown:
        raise ValueError(f"unknown candidate kinds {unknown}; choose from {sorted(BASELINES)}")
    if max_sweeps < 1:
        raise ValueError(f"max_sweeps must be >= 1, got {max_sweeps}")
    if not 0.0 <= trim < 0.5:
        raise ValueError(f"trim must lie in [0, 0.5), got {trim}")
    if not full_rmse_cap >= 1.0:
        raise ValueError(f"full_rmse_cap must be >= 1, got {full_rmse_cap}")
    return candidates


def _solve(den, grid: NoiseSchedule, noise, nfe: int, reference, reference_steps, local_dp: bool):
    """Step 1: ``(reference, kept trajectories or None, steps of the reference solve or
    None, steps of the accurate solve, local_dp, model evaluations)``: one accurate solve
    gives the reference and the dynamic program's trajectories."""
    if reference is not None and tuple(reference.shape) != tuple(noise.shape):
        raise ValueError(f"reference has shape {tuple(reference.shape)}, noise {tuple(noise.shape)}: they must match")
    steps = accurate_steps(grid, reference_steps, "reference_steps")
    local_dp = local_dp and nfe <= steps  # the DP picks its points from the solve's
    kept, ref_steps, evals = None, None, 0
    if local_dp or reference is None:
        kept = trajectory(den, grid, noise, steps=steps, points=max(100, nfe))
        evals = steps * int(noise.shape[0])
        if reference is None:
            reference, ref_steps = kept[2], steps
    return reference, kept, ref_steps, steps, local_dp, evals


def _starts(den, grid: NoiseSchedule, noise, nfe: int, kinds, powers, extra: Sequence[Schedule], kept) -> tuple[dict[str, np.ndarray], int]:
    """Step 2's candidates as grid indices (the baselines, the powers, the local-error DP
    when ``kept`` trajectories are given, ``extra``), and the evaluations the DP spent."""
    starts = {kind: grid_indices(grid, baseline_schedule(grid, nfe, kind).lam) for kind in kinds}
    for p in powers:
        starts[f"power{p:g}"] = np.asarray(grid_schedule(grid, nfe, p).indices, np.int64)
    evals = 0
    if kept is not None:
        dp = local_error_schedule(den, grid, noise, nfe, kept=kept)
        starts["local_dp"] = np.asarray(dp.indices, np.int64)
        evals = dp.info["model_evals"] * int(noise.shape[0])
    for s in extra:
        if s.nfe != nfe:
            raise ValueError(f"extra candidate ({s.method}) has {s.nfe} steps, not {nfe}")
        name = f"{s.method}/{s.info['rule']}/K={s.meta.K}" if "rule" in s.info else s.method
        starts[name if name not in starts else f"{name}#{len(starts)}"] = _on_grid(grid, s)
    return starts, evals


def _descend(objective: _Objective, idx: np.ndarray, best: tuple, cap: float, max_sweeps: int, report) -> tuple[np.ndarray, tuple]:
    """Step 3: coordinate descent with shrinking moves; a move is kept when the whole
    batch's error drops, neither half's rises and the untrimmed error stays under ``cap``."""
    nfe = len(idx) - 1
    for d in _move_sizes(objective.grid.K):
        for _ in range(max_sweeps):
            improved = False
            for i in range(1, nfe):  # point 0 (pure noise) and the clean-data end stay
                for move in (-d, d):
                    v = idx[i] + move
                    if not idx[i + 1] < v < idx[i - 1]:
                        continue
                    trial = idx.copy()
                    trial[i] = v
                    e = objective(trial)
                    if e[0] < best[0] and e[1] <= best[1] and e[2] <= best[2] and e[3] <= cap:
                        idx, best, improved = trial, e, True
                        break
            if not improved:
                break
        report(dict(stage=f"moves of {d}", loss=best[0], evals=objective.evals))
    return idx, best


def _guarded(den, grid: NoiseSchedule, idx: np.ndarray, starts: dict, solver: Solver, teacher: Teacher, fit, held) -> tuple[np.ndarray, dict, int]:
    """Step 4: the optimized schedule ``idx`` judged on the held-out rows against its
    starts; ``(indices to return, the guard's info, model evaluations)``."""
    cands = score_candidates(den, {k: Schedule.from_indices(grid, v) for k, v in starts.items()}, solver, teacher, fit, held)
    mine = sample_stats(den, Schedule.from_indices(grid, idx), solver, teacher.take(held))
    evals = len(starts) * (len(idx) - 1) * int(teacher.noise.shape[0]) + (len(idx) - 1) * held.size
    fallback, why = pick_guarded(mine, cands.on_held, cands.on_all)
    if fallback is not None:
        idx, mine = starts[fallback].copy(), cands.on_held[fallback]
    info = dict(selected="optimized" if fallback is None else fallback, guard=why, guard_reference=cands.reference, held_out=mine.as_dict(),
                held_out_candidates={k: v.as_dict() for k, v in cands.on_held.items()}, held_out_samples=int(held.size))
    return idx, info, evals


def _search(objective: _Objective, starts: dict, full_rmse_cap: float, max_sweeps: int, progress, spent: int):
    """Steps 2 and 3 on the fitted samples: ``(indices, their objective, every start's
    objective, the start's name)``; ``spent``: evaluations before (for the progress report)."""
    scored = {name: objective(idx) for name, idx in starts.items()}
    cap = full_rmse_cap * min(v[3] for v in scored.values())
    start = min((k for k in scored if scored[k][3] <= cap), key=lambda k: scored[k][0])
    nfe = len(starts[start]) - 1
    report, close = progress_reporter(
        progress, total=len(_move_sizes(objective.grid.K)) + 1, desc=f"optimizing a {objective.solver.name} schedule, nfe={nfe}",
        postfix=lambda r: dict(rmse=f"{r['loss']:.4g}", evals=r["evals"]),
    )
    try:
        report(dict(stage="candidates", loss=scored[start][0], evals=spent + objective.evals))
        idx, best = _descend(objective, starts[start].copy(), scored[start], cap, max_sweeps, lambda r: report(dict(r, evals=spent + r["evals"])))
    finally:
        close()
    return idx, best, scored, start


def optimize_schedule(
    model,
    grid: NoiseSchedule | None,
    noise: jax.Array,
    nfe: int,
    solver: str | Solver = DEFAULT_SOLVER,
    *,
    reference: jax.Array | None = None,
    reference_steps: int | None = None,
    candidates: Sequence[str] | None = None,
    powers: Sequence[float] = (1.5, 2.5, 3.0),
    extra_candidates: Sequence[Schedule] = (),
    local_dp: bool = True,
    max_sweeps: int = 2,
    trim: float = 0.02,
    validation: float | int | None = 0.25,
    full_rmse_cap: float = 1.05,
    progress: bool | Callable[[dict], None] = False,
) -> Schedule:
    """A schedule of exactly ``nfe`` steps on ``grid`` that minimises the global error of
    ``solver`` for ``model`` on the calibration ``noise`` (the steps are in the module docstring).

    Args:
      model: the model (see :func:`rbe_jax.rbe_sample`).
      grid: the noise schedule whose ``K`` points the steps may use (the model's full
        training schedule gives the finest placement and the most accurate reference;
        ``None``: the one the model carries, ``model.noise_schedule``).
      noise: ``(B, ...)`` standard-normal calibration noise: hundreds of samples (per-sample
        errors are heavy-tailed); check the result on fresh noise.
      nfe: steps, ``1 <= nfe <= K``; solver: the solver it is made for.
      reference: ``(B, ...)`` accurate endpoints of ``noise`` (skips the reference solve).
      reference_steps: steps of the reference solve (default ``min(K, 500)``).
      candidates: baseline kinds to start from (:data:`rbe_jax.BASELINES`; default every kind
        that applies to the process); powers: starts ``(K - 1)(1 - i / nfe)^p`` for each ``p``;
        extra_candidates: further schedules to start from (an RBE schedule, say).
      local_dp: also start from :func:`rbe_jax.local_error_schedule` (skipped when ``nfe``
        exceeds the accurate solve's steps).
      max_sweeps: passes over the points per move size.
      trim: the objective leaves out this fraction of the samples with the largest errors
        (the few that end in another mode under any few-step solver would otherwise be fitted
        instead of the typical one; :func:`schedule_error`).
      validation: the held-out part (a fraction in (0, 1), a count, ``None``: none), kept out
        of the search and used by the guard (step 4).
      full_rmse_cap: with ``trim > 0``, the untrimmed RMSE may exceed the candidates' lowest by
        at most this factor, at the start and after every move.
      progress: ``True`` for a tqdm bar over the stages, or a callable receiving ``{"stage",
        "loss", "evals"}`` after each.
    Returns:
      A :class:`Schedule` with ``method="optimized"``; its ``info`` holds ``solver``,
      ``start``, ``start_rmse``, ``rmse`` (trimmed), ``full_rmse``, ``candidates`` (their
      RMSEs on the fitted samples), the settings, the cost (``model_evals``, ``seconds``) and,
      with ``validation``, the guard's ``selected``, ``guard``, ``guard_reference``,
      ``held_out``, ``held_out_candidates`` and ``held_out_samples``.
    """
    t0 = time.perf_counter()
    grid = model_noise_schedule(model, grid, "grid")
    nfe, solver = check_nfe(nfe, grid.K), get_solver(solver)
    den, noise = prepare_denoiser(model, noise, grid, grid.log_snr[-1])
    kinds = _check_options(grid, candidates, max_sweeps, trim, full_rmse_cap)
    reference, kept, ref_steps, steps, local_dp, evals = _solve(den, grid, noise, nfe, reference, reference_steps, local_dp)
    fit = held = None
    if validation is not None:  # hold the last samples out: the search never sees them
        fit, held = split(noise.shape[0], validation)
        everything = Teacher(noise, reference, steps, 0, 0.0)
        noise, reference, kept = noise[fit], reference[fit], None if kept is None else (kept[0], kept[1][:, fit], kept[2][fit])
    starts, dp_evals = _starts(den, grid, noise, nfe, kinds, powers, extra_candidates, kept if local_dp else None)
    objective = _Objective(den, grid, noise, reference, solver, trim)
    idx, best, scored, start = _search(objective, starts, full_rmse_cap, max_sweeps, progress, evals + dp_evals)
    guard, guard_evals = {}, 0
    if validation is not None:
        idx, guard, guard_evals = _guarded(den, grid, idx, starts, solver, everything, fit, held)
    info = dict(
        solver=solver.name, **guard, start=start, start_rmse=scored[start][0], rmse=best[0], full_rmse=best[3],
        candidates={k: v[0] for k, v in scored.items()}, batch=int(noise.shape[0]), trim=trim, full_rmse_cap=full_rmse_cap,
        reference_steps=ref_steps, trajectory_steps=steps if kept is not None else None,
        model_evals=evals + dp_evals + objective.evals + guard_evals, seconds=round(time.perf_counter() - t0, 2),
    )
    return Schedule.from_indices(grid, idx, method="optimized", info=info)
