"""Schedules made for one model and one solver: :func:`optimize_schedule`.

The RBE rule bounds each step's backward error of first-order DDIM; what a user sees is the
*global* error of the solver that finally runs on the schedule.  :func:`optimize_schedule`
measures that directly: it solves the probability-flow ODE accurately for a batch of
calibration noise (a dense reference solve), starts from the best of several candidate
schedules judged by their global error on that batch, and then moves one point at a time
along the grid (coordinate descent with shrinking moves), keeping a move only when the
global error on the batch goes down.  It therefore never returns a schedule worse on the
calibration batch than the best candidate.  Judge it on fresh noise: small gains can be
overfitting to the calibration batch (``bench/schedules_compare.py`` does).
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..core._batch import compute_dtype
from ..core._progress import progress_reporter
from .local_error import accurate_steps, local_error_schedule, trajectory
from .learn import schedule_stats
from .teacher import ErrorStats, Teacher, best_by_rmse, make_teacher, pick_guarded, split
from ..core.noise import NoiseSchedule
from ..core.sampler import _scan_jit, prepare_denoiser, rbe_sample
from ..core.schedule import BASELINES, valid_baselines, Schedule, baseline_schedule, check_nfe, grid_indices, grid_schedule, schedule_points
from ..core.solvers import Solver, get_solver

__all__ = ["optimize_schedule", "reference_solution", "schedule_error"]


def reference_solution(model, grid: NoiseSchedule, noise: jax.Array, steps: int | None = None) -> jax.Array:
    """Accurate endpoints of the probability-flow ODE for ``noise``: DPM-Solver++(2M) on
    ``steps`` (default ``min(K, 500)``) evenly spaced indices of ``grid``.  On a full
    1,000-step training table this agrees with a float64 adaptive solve to about 1e-4 on the
    exact Gaussian mixtures of ``rbe_jax.testing``."""
    return make_teacher(model, grid, noise, steps).x


def schedule_error(model, noise, reference, schedule: Schedule, solver, trim: float = 0.0) -> float:
    """Root-mean-square error of sampling ``noise`` on ``schedule`` with ``solver`` against
    ``reference`` endpoints, over every element of the samples kept: with ``trim > 0`` the
    ``trim`` fraction of samples with the largest errors is left out (samples near a
    boundary between modes can flip under any solver and then dominate the mean)."""
    x = rbe_sample(model, noise, schedule, solver)
    return _rmse(_mse(x, reference), trim)


def _mse(x, reference) -> np.ndarray:
    """``(B,)`` mean squared error of each sample against the reference."""
    d = (x.astype(jnp.float32) - reference.astype(jnp.float32)).reshape(x.shape[0], -1)
    return np.asarray(jnp.mean(d**2, axis=1), np.float64)


def _rmse(mse: np.ndarray, trim: float) -> float:
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


def _grid_stats(model, grid: NoiseSchedule, idx: np.ndarray, solver: Solver, teacher: Teacher) -> ErrorStats:
    """The statistics of the schedule ``idx`` on ``grid`` against ``teacher``."""
    return schedule_stats(model, Schedule.from_indices(grid, idx), solver, teacher)


def _move_sizes(K: int) -> list[int]:
    sizes, d = [], max(1, K // 8)
    while d >= 1:
        sizes.append(d)
        d //= 2
    return sizes


def optimize_schedule(
    model,
    grid: NoiseSchedule,
    noise: jax.Array,
    nfe: int,
    solver: str | Solver = "unipc",
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
    ``solver`` for ``model`` on the calibration ``noise``.

    1. Reference endpoints of ``noise``: ``reference`` if given, else those of an accurate
       solve as in :func:`reference_solution` (DPM-Solver++(2M) over ``reference_steps``
       points of ``grid``; pass the model's full training schedule as ``grid`` for the
       finest placement and the most accurate reference).  The same solve gives the
       trajectories of the ``local_dp`` start.
    2. Start: the candidate with the lowest RMSE to the reference (``trim`` applied; among
       those within ``full_rmse_cap`` untrimmed), from the baselines named
       in ``candidates``, the power family ``powers`` and any ``extra_candidates`` (an RBE
       schedule, say; mapped onto ``grid`` by training timestep).
    3. Refine: for move sizes ``K/8, K/16, ..., 1`` grid points, try moving each point
       between the first (``K - 1``, pure noise) and clean data up or down by that size,
       keeping the strict order; keep a move if the RMSE on the whole batch drops and the
       RMSE on neither half of the batch rises (a guard against fitting a few samples);
       repeat a size up to ``max_sweeps`` times while it helps.

    Args:
      model: the model (see :func:`rbe_jax.rbe_sample`).
      grid: the noise schedule whose points the steps may use (``K`` points).
      noise: ``(B, ...)`` standard-normal calibration noise.  Per-sample errors are
        heavy-tailed, so with a small ``B`` the choice of start and of each move rests on a
        few samples: use hundreds (the CLI's default is 256) and check the result on fresh
        noise.
      nfe: steps, ``1 <= nfe <= K``.
      solver: the solver the schedule is made for (a name or :class:`Solver`).
      reference: ``(B, ...)`` accurate endpoints of ``noise`` (skips the reference solve).
      reference_steps: steps of the reference solve (default ``min(K, 500)``).
      candidates: baseline kinds to start from (see :data:`rbe_jax.BASELINES`; default every
        kind that applies to the process), each placed in continuous time and moved to the
        nearest grid points.
      powers: further starts ``(K - 1)(1 - i / nfe)^p`` for each ``p`` (1 is uniform, 2
        quadratic): a one-parameter family between them and beyond.
      extra_candidates: further schedules to start from (in ``info["candidates"]`` under
        their method, RBE schedules with their rule and grid size).
      local_dp: also start from :func:`rbe_jax.tuning.local_error.local_error_schedule` (a dynamic
        program over measured one-step local errors along the accurate trajectories of
        ``noise``; costs one accurate solve more when ``reference`` is given; skipped when
        ``nfe`` exceeds the solve's steps).
      max_sweeps: passes over the points per move size.
      trim: the objective leaves out this fraction of the calibration samples with the
        largest errors (see :func:`schedule_error`).  About 1% of samples sit near a
        boundary between modes and end in another mode under any few-step solver; they
        carry most of the squared error, so an untrimmed objective fits those few samples
        (which does not carry over to fresh noise) instead of the typical one.
        ``bench/schedules_compare.py --trim 0`` measures the untrimmed objective.
      validation: hold out the last samples of ``noise`` (a fraction in (0, 1) or a count;
        ``None``: none) from steps 2 and 3, then judge on them (:func:`rbe_jax.tuning.teacher.pick_guarded`):
        the optimized schedule is returned only when it is no worse there than the best of
        its starts (by RMSE on all of ``noise``) in RMSE and in median per-sample error; otherwise that
        start is (``info["selected"]`` says which).  Coordinate moves on a few hundred samples
        overfit them: this makes the result safe on fresh noise.
      full_rmse_cap: with ``trim > 0``, the untrimmed RMSE on the batch may exceed the
        lowest untrimmed RMSE among the candidates by at most this factor, at the start
        and after every move (so that trimming cannot buy typical-sample accuracy with
        more samples lost to the wrong mode).
      progress: ``True`` for a tqdm bar over the stages (candidates, then each move
        size), or a callable receiving ``{"stage", "loss", "evals"}`` after each stage.
    Returns:
      A :class:`Schedule` with ``method="optimized"`` and in ``info``: with ``validation``,
      ``selected``, ``guard`` (why), ``guard_reference`` (the start it compared with), ``held_out`` (its :class:`rbe_jax.ErrorStats` there),
      ``held_out_candidates`` and ``held_out_samples``; ``solver``,
      ``start`` (the winning candidate), ``start_rmse``, ``rmse`` (the objective on the
      calibration batch, ``trim`` applied), ``full_rmse`` (untrimmed), ``trim``,
      ``full_rmse_cap``,
      ``candidates`` (their RMSEs on the fitted samples), ``batch`` (fitted samples), ``reference_steps`` (``None`` when
      ``reference`` was given), ``trajectory_steps``, ``model_evals`` (per-sample model
      evaluations spent, accurate solve included) and ``seconds``.
    """
    t0 = time.perf_counter()
    if not isinstance(grid, NoiseSchedule):
        raise TypeError(f"grid must be a NoiseSchedule, got {type(grid).__name__}")
    nfe = check_nfe(nfe, grid.K)
    solver = get_solver(solver)
    model, noise = prepare_denoiser(model, noise, grid, grid.log_snr[-1])
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
    B = noise.shape[0]
    evals = 0
    if reference is not None and tuple(reference.shape) != tuple(noise.shape):
        raise ValueError(f"reference has shape {tuple(reference.shape)}, noise {tuple(noise.shape)}: they must match")
    steps = accurate_steps(grid, reference_steps, "reference_steps")
    local_dp = local_dp and nfe <= steps  # the DP picks its points from the solve's
    kept, ref_steps = None, None
    if local_dp or reference is None:  # one accurate solve gives the reference and the DP's trajectories
        kept = trajectory(model, grid, noise, steps=steps, points=max(100, nfe))
        evals += steps * B
        if reference is None:
            reference, ref_steps = kept[2], steps
    cdt = compute_dtype(noise.dtype)
    if validation is not None:  # hold the last samples out: the search never sees them
        fit, held = split(B, validation)
        all_teacher = Teacher(noise, reference, steps, 0, 0.0)
        noise, reference, B = noise[fit], reference[fit], fit.size
        if kept is not None:
            kept = (kept[0], kept[1][:, fit], kept[2][fit])

    half = B // 2

    def losses(idx: np.ndarray) -> tuple[float, float, float, float]:
        """(whole batch, first half, second half) RMSE of the schedule ``idx`` with ``trim``
        applied, and the untrimmed RMSE of the whole batch."""
        nonlocal evals
        evals += nfe * B
        pts = schedule_points(Schedule.from_indices(grid, idx), cdt)
        mse = _mse(_scan_jit(model, noise, pts, solver).x, reference)
        return _rmse(mse, trim), _rmse(mse[:half], trim), _rmse(mse[half:], trim), _rmse(mse, 0.0)

    starts = {kind: grid_indices(grid, baseline_schedule(grid, nfe, kind).lam) for kind in candidates}
    for p in powers:
        starts[f"power{p:g}"] = np.asarray(grid_schedule(grid, nfe, p).indices, np.int64)
    if local_dp:
        dp = local_error_schedule(model, grid, noise, nfe, kept=kept)
        starts["local_dp"] = np.asarray(dp.indices, np.int64)
        evals += dp.info["model_evals"] * B
    for s in extra_candidates:
        if s.nfe != nfe:
            raise ValueError(f"extra candidate ({s.method}) has {s.nfe} steps, not {nfe}")
        name = f"{s.method}/{s.info['rule']}/K={s.meta.K}" if "rule" in s.info else s.method
        starts[name if name not in starts else f"{name}#{len(starts)}"] = _on_grid(grid, s)
    scored = {name: losses(idx) for name, idx in starts.items()}
    cap = full_rmse_cap * min(v[3] for v in scored.values())
    start = min((k for k in scored if scored[k][3] <= cap), key=lambda k: scored[k][0])
    idx, best = starts[start].copy(), scored[start]
    report, close = progress_reporter(
        progress,
        total=len(_move_sizes(grid.K)) + 1,
        desc=f"optimizing a {solver.name} schedule, nfe={nfe}",
        postfix=lambda r: dict(rmse=f"{r['loss']:.4g}", evals=r["evals"]),
    )
    report(dict(stage="candidates", loss=best[0], evals=evals))
    try:
        for d in _move_sizes(grid.K):
            for _ in range(max_sweeps):
                improved = False
                for i in range(1, nfe):  # point 0 (pure noise) and the clean-data end stay
                    for move in (-d, d):
                        v = idx[i] + move
                        if not idx[i + 1] < v < idx[i - 1]:
                            continue
                        trial = idx.copy()
                        trial[i] = v
                        e = losses(trial)
                        if e[0] < best[0] and e[1] <= best[1] and e[2] <= best[2] and e[3] <= cap:
                            idx, best, improved = trial, e, True
                            break
                if not improved:
                    break
            report(dict(stage=f"moves of {d}", loss=best[0], evals=evals))
    finally:
        close()
    scores = {k: v[0] for k, v in scored.items()}
    guard = {}
    if validation is not None:
        on_all = {k: _grid_stats(model, grid, v, solver, all_teacher) for k, v in starts.items()}
        on_held = {k: v.take(held) for k, v in on_all.items()}
        mine = _grid_stats(model, grid, idx, solver, all_teacher.take(held))
        evals += len(starts) * nfe * int(all_teacher.noise.shape[0]) + nfe * held.size
        fallback, why = pick_guarded(mine, on_held, on_all)
        if fallback is not None:
            idx, mine = starts[fallback].copy(), on_held[fallback]
        guard = dict(selected="optimized" if fallback is None else fallback, guard=why, guard_reference=best_by_rmse(on_all), held_out=mine.as_dict(),
                     held_out_candidates={k: v.as_dict() for k, v in on_held.items()}, held_out_samples=int(held.size))
    info = dict(
        solver=solver.name,
        **guard,
        start=start,
        start_rmse=scores[start],
        rmse=best[0],
        full_rmse=best[3],
        candidates=scores,
        batch=B,
        trim=trim,
        full_rmse_cap=full_rmse_cap,
        reference_steps=ref_steps,
        trajectory_steps=steps if kept is not None else None,
        model_evals=evals,
        seconds=round(time.perf_counter() - t0, 2),
    )
    return Schedule.from_indices(grid, idx, method="optimized", info=info)
