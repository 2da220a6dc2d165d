"""What every schedule tuner shares: the teacher (an accurate solve of the calibration noise,
made once and reused across solvers and NFEs), the split of that noise into a part to fit
and a held-out part to judge on, and the per-sample error statistics a schedule is judged by.

A tuned schedule is only as good as it is on noise it never saw: :func:`split` holds part of
the calibration noise out, and :func:`pick_guarded` returns a tuned schedule only where it is
no worse than the best fixed candidate on that part both in RMSE and in the median
per-sample error, so that the typical sample is never traded for the tail or the other way
round.

Functions that take ``den`` (:func:`sample_stats`, :func:`score_candidates`) are the private
cores behind the tuners' public edges: they expect a model already in the internal form and
placed next to the noise (:func:`rbe_jax.core.sampler.prepare_denoiser`), and validate
nothing again.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..core._batch import compute_dtype
from ..core.models import model_noise_schedule
from ..core.noise import NoiseSchedule
from ..core.sampler import _scan_jit, prepare_denoiser
from ..core.schedule import Schedule, grid_schedule, schedule_points
from ..core.solvers import Solver, dpmpp2m, get_solver
from .local_error import accurate_steps

__all__ = [
    "Teacher", "ErrorStats", "Candidates", "make_teacher", "split", "per_sample_rms", "error_stats", "schedule_stats", "sample_stats", "solve_teacher",
    "score_candidates", "best_by_rmse", "best_of", "balanced", "pick_guarded",
]


class Teacher(NamedTuple):
    """Accurate endpoints of a batch of noise, made once by :func:`make_teacher`.

    Attributes:
      noise: ``(B, ...)`` the standard-normal noise.
      x: ``(B, ...)`` the probability-flow ODE's endpoints of ``noise`` (DPM-Solver++(2M) over
        ``steps`` points of the noise schedule's grid).
      steps: steps of that solve.
      model_evals: model evaluations it cost (``steps * B``).
      seconds: wall time it took.
    """

    noise: jax.Array
    x: jax.Array
    steps: int
    model_evals: int
    seconds: float

    def take(self, rows) -> "Teacher":
        """The teacher of the samples ``rows`` (an index array or a slice)."""
        rows = np.arange(self.noise.shape[0])[rows]
        return self._replace(noise=self.noise[rows], x=self.x[rows])


def make_teacher(model, noise_schedule: NoiseSchedule | None, noise: jax.Array, steps: int | None = None) -> Teacher:
    """The :class:`Teacher` of ``noise``: DPM-Solver++(2M) over ``steps`` (default
    ``min(K, 500)``) evenly spaced indices of ``noise_schedule``'s ``K`` grid points, from its
    noisiest point to clean data.  On a 1,000-step training table this agrees with a float64
    adaptive solve to about 1e-4 on the exact mixtures of :mod:`rbe_jax.testing`.

    Args:
      model: the model (see :func:`rbe_jax.rbe_sample`).
      noise_schedule: the model's noise schedule (its grid bounds the solve; ``None``: the
        one the model carries, ``model.noise_schedule``).
      noise: ``(B, ...)`` standard-normal noise.
      steps: steps of the solve, ``1 <= steps <= K``.
    """
    noise_schedule = model_noise_schedule(model, noise_schedule)
    steps = accurate_steps(noise_schedule, steps, "teacher_steps")
    den, noise = prepare_denoiser(model, noise, noise_schedule, grid_schedule(noise_schedule, steps).lam[0])
    return solve_teacher(den, noise_schedule, noise, steps)


def solve_teacher(den, noise_schedule: NoiseSchedule, noise: jax.Array, steps: int) -> Teacher:
    """:func:`make_teacher` for a prepared ``den`` and checked ``steps`` (no checks)."""
    t0 = time.perf_counter()
    pts = schedule_points(grid_schedule(noise_schedule, steps), compute_dtype(noise.dtype))
    x = _scan_jit(den, noise, pts, dpmpp2m()).x
    x.block_until_ready()
    return Teacher(noise, x, steps, steps * int(noise.shape[0]), round(time.perf_counter() - t0, 3))


def split(n: int, validation: float | int) -> tuple[np.ndarray, np.ndarray]:
    """``(fit rows, held-out rows)`` of ``n`` calibration samples: the last ``validation``
    samples (a count) or that fraction of them (at least one) are held out.

    Raises:
      ValueError: a split that leaves either part empty.
    """
    if isinstance(validation, (int, np.integer)) and not isinstance(validation, bool):
        held = int(validation)
    elif isinstance(validation, float) and 0.0 < validation < 1.0:
        held = max(1, int(round(validation * n)))
    else:
        raise ValueError(f"validation must be a fraction in (0, 1) or a count of samples, got {validation!r}")
    if not 1 <= held < n:
        raise ValueError(f"validation holds out {held} of {n} calibration samples: both the fitted and the held-out part need at least one")
    return np.arange(n - held), np.arange(n - held, n)


def per_sample_rms(x: jax.Array, reference: jax.Array) -> jax.Array:
    """``(B,)`` root-mean-square difference of each sample from its reference (float32 or wider)."""
    d = (x.astype(jnp.float32) - reference.astype(jnp.float32)).reshape(x.shape[0], -1)
    return jnp.sqrt(jnp.mean(d * d, axis=1))


STAT_FIELDS = ("score", "rmse", "median")


class ErrorStats(NamedTuple):
    """A schedule's errors on a batch, from the ``(B,)`` per-sample RMS errors ``e``.

    Attributes:
      score: ``mean(e)``, the mean per-sample error (what the tuners minimise by default: it
        weighs every sample alike instead of letting a few far-off samples dominate).
      rmse: ``sqrt(mean(e^2))``, the root-mean-square error over every element.
      median: ``median(e)``, the typical sample's error.
      errors: ``e`` itself (``None`` when not kept).
    """

    score: float
    rmse: float
    median: float
    errors: np.ndarray | None = None  # the (B,) per-sample errors, when known (for the guard's resampling)

    def no_worse_than(self, other: "ErrorStats") -> bool:
        """No larger RMSE and no larger median per-sample error than ``other``."""
        return self.rmse <= other.rmse and self.median <= other.median

    def as_dict(self) -> dict:
        return {k: float(getattr(self, k)) for k in STAT_FIELDS}

    def take(self, rows) -> "ErrorStats":
        """The statistics of the samples ``rows`` alone (needs :attr:`errors`)."""
        return error_stats(self.errors[rows])


def error_stats(e) -> ErrorStats:
    """:class:`ErrorStats` of per-sample errors ``e`` ``(B,)`` (non-finite errors give ``inf``)."""
    e = np.asarray(e, np.float64)
    if not np.all(np.isfinite(e)):
        return ErrorStats(np.inf, np.inf, np.inf, e)
    return ErrorStats(float(np.mean(e)), float(np.sqrt(np.mean(e * e))), float(np.median(e)), e)


def best_by_rmse(stats: dict[str, ErrorStats]) -> str:
    """The name of the schedule with the lowest RMSE."""
    return min(stats, key=lambda k: stats[k].rmse)


def best_of(stats: dict[str, ErrorStats]) -> ErrorStats:
    """The elementwise best (smallest) of several schedules' statistics."""
    return ErrorStats(*(min(getattr(v, k) for v in stats.values()) for k in STAT_FIELDS))


def balanced(ref: ErrorStats) -> Callable[[ErrorStats], float]:
    """The tuners' criterion: ``(rmse^2 / ref.rmse^2 + score / ref.score) / 2``, the mean
    squared error and the mean per-sample error, each relative to ``ref`` (the best of the
    fixed candidates, :func:`best_of`), so that neither the far-off samples (which dominate
    the squared error) nor the typical one (which dominates the per-sample mean) is given up
    for the other."""
    return lambda st: 0.5 * (st.rmse**2 / ref.rmse**2 + st.score / ref.score)


def pick_guarded(
    tuned: ErrorStats, fixed: dict[str, ErrorStats], rank: dict[str, ErrorStats] | None = None, *, confidence: float = 0.8, resamples: int = 1000
) -> tuple[str | None, str]:
    """The guard on held-out noise: ``(None, reason)`` when the tuned schedule's held-out
    statistics ``tuned`` are no worse than those of the best fixed candidate in RMSE and in
    median per-sample error, and stay so in at least ``confidence`` of paired bootstrap
    resamples of the held-out samples (when both carry their per-sample errors: a win that a
    few samples decide is not taken); else ``(that candidate's name, reason)``: return it
    instead.

    Args:
      tuned: the tuned schedule's statistics on the held-out samples.
      fixed: each fixed candidate's statistics on the same samples.
      rank: each candidate's statistics on more samples (all the calibration noise, say), to
        pick the best candidate by RMSE with less noise than the held-out part alone gives;
        default ``fixed``.
      confidence: the share of resamples in which the tuned schedule must be no worse.
      resamples: bootstrap resamples (a fixed seed: the guard is deterministic).
    """
    best = best_by_rmse(fixed if rank is None else rank)
    b = fixed[best]
    worse = [k for k in ("rmse", "median") if getattr(tuned, k) > getattr(b, k)]
    if not worse and tuned.errors is not None and b.errors is not None and len(tuned.errors) == len(b.errors):
        idx = np.random.default_rng(0).integers(0, len(b.errors), (resamples, len(b.errors)))
        t, f = tuned.errors[idx], b.errors[idx]
        share = {
            "rmse": float(np.mean(np.mean(t * t, axis=1) <= np.mean(f * f, axis=1))),
            "median": float(np.mean(np.median(t, axis=1) <= np.median(f, axis=1))),
        }
        worse = [f"{k} (no worse in only {v:.0%} of resamples)" for k, v in share.items() if v < confidence]
    if not worse:
        return None, f"no worse than the best fixed candidate ({best}) on the held-out samples"
    return best, f"not surely better than {best} on the held-out samples in {', '.join(worse)}: {best} kept"


def schedule_stats(model, schedule: Schedule, solver, teacher: Teacher) -> ErrorStats:
    """The :class:`ErrorStats` of sampling ``teacher.noise`` on ``schedule`` with ``solver``,
    against the teacher's endpoints."""
    den, _ = prepare_denoiser(model, teacher.noise, schedule.noise_schedule, schedule.lam[0])
    return sample_stats(den, schedule, get_solver(solver), teacher)


def sample_stats(den, schedule: Schedule, solver: Solver, teacher: Teacher) -> ErrorStats:
    """:func:`schedule_stats` for a prepared ``den`` and a :class:`Solver` (no checks)."""
    pts = schedule_points(schedule, compute_dtype(teacher.noise.dtype))
    return error_stats(per_sample_rms(_scan_jit(den, teacher.noise, pts, solver).x, teacher.x))


class Candidates(NamedTuple):
    """Fixed schedules scored once on all the calibration noise, and their parts.

    Attributes:
      schedules: name -> :class:`Schedule`.
      on_all, on_fit, on_held: name -> :class:`ErrorStats` on all the samples, the fitted
        part and the held-out part.
      reference: the name of the best by RMSE on all the samples (the guard's reference).
    """

    schedules: dict
    on_all: dict
    on_fit: dict
    on_held: dict
    reference: str


def score_candidates(den, schedules: dict[str, Schedule], solver: Solver, teacher: Teacher, fit_rows, held_rows) -> Candidates:
    """Samples every schedule once on ``teacher.noise`` and splits its per-sample errors into
    the fitted rows and the held-out rows."""
    on_all = {k: sample_stats(den, s, solver, teacher) for k, s in schedules.items()}
    return Candidates(
        schedules=dict(schedules),
        on_all=on_all,
        on_fit={k: v.take(fit_rows) for k, v in on_all.items()},
        on_held={k: v.take(held_rows) for k, v in on_all.items()},
        reference=best_by_rmse(on_all),
    )
