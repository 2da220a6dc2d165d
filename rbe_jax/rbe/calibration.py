"""From adaptive RBE paths to a fixed schedule: the reference rule, a tau search, and
:func:`calibrate`.

The reference method keeps the calibration samples whose adaptive path has exactly the
target number of steps and averages their index paths.  It leaves the threshold ``tau`` to
be tuned by hand; :func:`calibrate` searches it on a sub-batch (secant steps in
``(log tau, log mean NFE)`` inside a bracket, see :func:`_search_tau`), then runs the whole
batch once at the threshold found.  When too few samples land on ``nfe`` (a large ``nfe``
near ``K`` on a coarse grid, say), it falls back to resampling every finished path to
``nfe`` steps before averaging, which still uses the method's paths.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import numpy as np

from ..core._batch import raise_nonfinite
from ..core._progress import progress_reporter
from ..core.models import model_noise_schedule
from ..core.noise import NoiseSchedule
from ..core.schedule import Schedule, check_nfe, strictly_decreasing_path
from .adaptive import AdaptivePaths, _checked, backward_error_run, local_error_run

__all__ = ["schedule_from_paths", "resampled_schedule_from_paths", "calibrate", "path_lengths", "RULES"]

TAU_MIN, TAU_MAX = 1e-12, 1e12
# the step-size rules: how adaptive paths bound each step, and the search's first threshold
RULES = {"backward_error": (backward_error_run, 1.0), "local_error": (local_error_run, 1e-2)}
BRACKET_RATIO = 1.01  # stop bisecting once hi / lo is this close: step counts barely move


def path_lengths(paths) -> np.ndarray:
    """Steps of each padded path ``(B, L)``: the number of entries ``>= 0``; ``-1`` marks
    a path that never reached clean data."""
    p = np.asarray(paths)
    n = np.sum(p >= 0, axis=1)
    return np.where(np.any(p < 0, axis=1), n, -1)


def schedule_from_paths(paths, nfe: int) -> np.ndarray:
    """The reference rule: mean index path of the samples with exactly ``nfe`` steps.

    Args:
      paths: ``(B, L)`` padded index paths from :func:`adaptive_paths`.
      nfe: the target number of steps.
    Returns:
      ``(nfe + 1,)`` int64 indices: the element-wise mean, rounded half up (which keeps a
      mean of strictly decreasing integer paths strictly decreasing).
    Raises:
      ValueError: if no path has exactly ``nfe`` steps.
    """
    p = np.asarray(paths)
    if p.ndim != 2:
        raise ValueError(f"paths must be (B, L), got shape {p.shape}")
    nfe = check_nfe(nfe, max(p.shape[1] - 1, 1))
    keep = path_lengths(p) == nfe
    if not np.any(keep):
        raise ValueError(f"no calibration path has exactly nfe={nfe} steps")
    mean = p[keep, : nfe + 1].astype(np.float64).mean(axis=0)
    return np.floor(mean + 0.5).astype(np.int64)


def resampled_schedule_from_paths(paths, nfe: int, K: int) -> np.ndarray:
    """Fallback aggregation: every finished path resampled to ``nfe`` steps, then averaged.

    A path of ``m`` steps is read as a piecewise-linear index curve over progress
    ``u = j / m``; it is evaluated at ``u = i / nfe``, ``i = 0..nfe``, the curves are averaged
    over samples, rounded, and made strictly decreasing.

    Returns:
      ``(nfe + 1,)`` int64 indices from the paths' start to ``-1``.
    """
    p = np.asarray(paths)
    lengths = path_lengths(p)
    ok = lengths > 0
    if not np.any(ok):
        raise ValueError("no calibration path reached clean data")
    u = np.arange(nfe + 1) / nfe
    curves = [np.interp(u, np.arange(m + 1) / m, p[b, : m + 1].astype(np.float64)) for b, m in zip(np.flatnonzero(ok), lengths[ok])]
    return strictly_decreasing_path(np.mean(curves, axis=0), K)


def _host(x) -> np.ndarray:
    """A NumPy copy of ``x``; a batch sharded over several processes is gathered first
    (every process then computes the same schedule)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def _check_finite(res: AdaptivePaths, grid: NoiseSchedule, tau: float) -> None:
    idx = _host(res.nonfinite_index)
    t = grid.grid_points().t

    def describe(b: int) -> str:
        return f"grid index {int(idx[b])} (model time {t[max(int(idx[b]), 0)]:.6g})"

    raise_nonfinite(f"calibration (tau={tau:.4g})", _host(res.nonfinite_step), describe)


class _Runs:
    """The adaptive runs of one calibration: ``runs(tau, x)`` runs the rule's paths of the
    samples ``x`` at threshold ``tau``, checks them, records and reports their statistics,
    and returns them with the paths on the host (``"res"``)."""

    def __init__(self, rule: str, den, grid: NoiseSchedule, nfe: int, max_steps: int, chunk_size: int | None, report):
        self.paths_fn = RULES[rule][0]
        self.den, self.grid, self.nfe, self.max_steps, self.chunk_size, self.report = den, grid, nfe, max_steps, chunk_size, report
        self.stats: list[dict] = []

    def __call__(self, tau: float, x: jax.Array) -> dict:
        res = self.paths_fn(self.den, self.grid, x, tau, self.max_steps, self.chunk_size)
        _check_finite(res, self.grid, tau)
        res = res._replace(**{f: _host(getattr(res, f)) for f in ("paths", "nfe", "finished")})
        steps = np.where(res.finished, res.nfe, self.max_steps + 1)
        r = dict(
            tau=float(tau),
            samples=int(x.shape[0]),
            mean_nfe=float(steps.mean()),
            exact=int(np.sum(steps == self.nfe)),
            iterations=int(res.iterations),
            sample_evals=int(_host(res.evals).sum()),
        )
        self.stats.append(r)
        self.report(dict(r))
        return dict(r, res=res)


def _aggregate(best: dict, nfe: int, min_samples: int, K: int, max_steps: int) -> tuple[np.ndarray, str, int]:
    """The fixed schedule of the final run's paths: ``(indices, "exact" or "resampled",
    samples used)``."""
    res: AdaptivePaths = best["res"]
    if best["exact"] >= min_samples:
        return schedule_from_paths(res.paths, nfe), "exact", best["exact"]
    if not np.any(res.finished):
        raise ValueError(f"calibration failed: no sample reached clean data within {max_steps} steps at tau={best['tau']:.4g}")
    return resampled_schedule_from_paths(res.paths, nfe, K), "resampled", int(np.sum(res.finished))


def calibrate(
    model,
    grid: NoiseSchedule | None,
    noise: jax.Array,
    nfe: int,
    *,
    tau: float | None = None,
    rule: str = "backward_error",
    min_samples: int | None = None,
    max_iters: int = 40,
    tau_init: float | None = None,
    search_samples: int = 64,
    chunk_size: int | None = None,
    progress: bool | Callable[[dict], None] = False,
) -> Schedule:
    """Finds an RBE schedule of exactly ``nfe`` steps for ``model`` on ``grid``.

    Args:
      model: the model (see :func:`rbe_jax.rbe_sample`).
      grid: the (respaced) noise schedule of ``K`` points, of any family (``None``: the one
        the model carries, ``model.noise_schedule``).
      noise: ``(B, ...)`` standard-normal calibration noise (e.g. 256-2500 samples).
      nfe: target steps, ``1 <= nfe < K``.
      tau: a fixed threshold (skips the search); default: searched.
      rule: how each adaptive step is bounded: ``"backward_error"`` (the seed's rule, DDIM
        steps, one VJP each; :func:`rbe_jax.adaptive_paths`) or ``"local_error"``
        (DPM-Solver++(2M) steps whose estimated local error, an RMS distance per element in
        the data's units, stays below ``tau``; :func:`rbe_jax.local_error_paths`).  The
        schedule then serves any solver.
      min_samples: samples with exactly ``nfe`` steps needed to use the reference rule
        (default ``max(1, ceil(B / 20))``); with fewer, paths are resampled
        (:func:`resampled_schedule_from_paths`).
      max_iters: adaptive runs the search may spend at most.
      tau_init: the search's first threshold (default 1, or 0.01 for the local-error rule).
      search_samples: the search runs on the first this-many samples; the schedule comes
        from one run of the whole batch at the threshold found.
      chunk_size: run the paths in chunks of this many samples (same schedule, less memory).
      progress: ``True`` for a tqdm bar of adaptive runs, or a callable receiving each run's
        statistics (``tau``, ``samples``, ``mean_nfe``, ``exact``, ``iterations``,
        ``sample_evals``).
    Returns:
      A :class:`Schedule` with ``method="rbe"``, its ``tau``, and in ``info``: ``rule``,
      ``samples_used``, ``aggregation`` (``"exact"`` or ``"resampled"``),
      ``nfe_histogram``, ``search_runs`` (runs on the search sub-batch; the final
      whole-batch run comes on top), ``calibration_evals`` (batched passes, all runs) and
      ``calibration_sample_evals`` (per-sample model evaluations, all runs).
    Raises:
      FloatingPointError: the model returned NaN/Inf (names the sample, step, grid index).
      ValueError: bad arguments, or no threshold in [1e-12, 1e12] gives ``nfe`` steps.
    """
    grid = model_noise_schedule(model, grid, "grid")
    nfe = check_nfe(nfe, grid.K - 1)
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {sorted(RULES)}")
    # While searching, paths longer than this only tell us that tau is too small: cap the
    # loop there.  A fixed tau runs every path to the end.
    max_steps = grid.K if tau is not None else min(grid.K, 2 * nfe + 2)
    den, noise, max_steps = _checked(model, grid, noise, RULES[rule][1] if tau is None else tau, max_steps)
    B = noise.shape[0]
    min_samples = max(1, math.ceil(B / 20)) if min_samples is None else int(min_samples)
    if min_samples < 1:
        raise ValueError(f"min_samples must be >= 1, got {min_samples}")
    report, close = progress_reporter(progress, total=1 if tau is not None else max_iters + 1, desc=f"calibrating RBE, nfe={nfe}",
                                      postfix=lambda r: dict(tau=f"{r['tau']:.3g}", mean_nfe=f"{r['mean_nfe']:.2f}", exact=r["exact"]))
    runs = _Runs(rule, den, grid, nfe, max_steps, chunk_size, report)
    try:
        if tau is None:
            sub = noise[: min(B, int(search_samples))]
            tau_init = RULES[rule][1] if tau_init is None else float(tau_init)
            tau = _search_tau(lambda t: runs(t, sub), nfe, tau_init, max_iters, target=math.ceil(sub.shape[0] / 2))
        best = runs(float(tau), noise)
    finally:
        close()
    idx, aggregation, used = _aggregate(best, nfe, min_samples, grid.K, max_steps)
    info = dict(rule=rule, samples_used=used, batch=B, aggregation=aggregation, **_run_stats(best["res"].paths, runs.stats))
    return Schedule.from_indices(grid, idx, method="rbe", tau=best["tau"], info=info)


def _run_stats(paths: np.ndarray, stats: list[dict]) -> dict:
    """The final run's histogram of path lengths and the cost of every run."""
    lengths = path_lengths(paths)
    return dict(
        nfe_histogram={str(int(m)): int(c) for m, c in zip(*np.unique(lengths[lengths > 0], return_counts=True))},
        search_runs=len(stats) - 1,
        calibration_evals=int(sum(r["iterations"] for r in stats)),
        calibration_sample_evals=int(sum(r["sample_evals"] for r in stats)),
    )


def _search_tau(run: Callable[[float], dict], nfe: int, tau0: float, max_iters: int, target: int) -> float:
    """Finds the threshold whose adaptive runs take ``nfe`` steps, and returns the one that
    gave the most samples with exactly ``nfe`` steps.

    A sample's step count scales roughly like ``tau^(-1/2)`` (``h ~ sqrt(tau)``), so each
    proposal is a secant step in ``(log tau, log mean NFE)`` (slope -1/2 until two runs
    measure it), kept inside the bracket of thresholds known to give too many and too few
    steps (a geometric bisection otherwise).  Stops once ``target`` samples take exactly
    ``nfe`` steps, the mean is within 0.25 of ``nfe``, the bracket is narrower than
    :data:`BRACKET_RATIO`, or after ``max_iters`` runs.
    """
    if not (math.isfinite(tau0) and tau0 > 0):
        raise ValueError(f"tau_init must be a finite number > 0, got {tau0}")
    lo = hi = None  # lo: too many steps (tau too small); hi: at most nfe on average
    best, prev, t = None, None, tau0
    for _ in range(max_iters):
        r = run(t)
        if best is None or (r["exact"], -abs(r["mean_nfe"] - nfe)) > (best["exact"], -abs(best["mean_nfe"] - nfe)):
            best = r
        if r["exact"] >= target or abs(r["mean_nfe"] - nfe) < 0.25:
            break
        if r["mean_nfe"] > nfe:
            lo = t
        else:
            hi = t
        if lo is not None and hi is not None and hi / lo < BRACKET_RATIO:
            break
        slope = -0.5
        if prev is not None and prev["mean_nfe"] != r["mean_nfe"] and prev["tau"] != t:
            slope = (math.log(r["mean_nfe"]) - math.log(prev["mean_nfe"])) / (math.log(t) - math.log(prev["tau"]))
            slope = min(max(slope, -2.0), -0.1)
        prev = r
        t_new = t * math.exp(min(max((math.log(nfe) - math.log(r["mean_nfe"])) / slope, -math.log(100.0)), math.log(100.0)))
        if lo is not None and hi is not None and not lo < t_new < hi:
            t_new = math.sqrt(lo * hi)
        t = t_new
        if not TAU_MIN <= t <= TAU_MAX:
            side = "smaller" if lo is None else "larger"
            raise ValueError(
                f"calibration failed: no threshold in [{TAU_MIN:g}, {TAU_MAX:g}] gives nfe={nfe}; "
                f"a {side} tau was needed (is the model output scaled sensibly?)"
            )
    return best["tau"]
