"""Schedules (and solver coefficients) tuned for one model and one solver.

- :mod:`.local_error` — accurate trajectories and a dynamic program over measured local
  errors;
- :mod:`.teacher` — the teacher solve, the fitted / held-out split, per-sample error
  statistics and the guard that never returns a tuned schedule worse than a fixed one;
- :mod:`.learn` — ``learn_schedule``: times learned by gradient through the sampler;
- :mod:`.optimize` — ``optimize_schedule``: a derivative-free search of the global error.

Built on :mod:`rbe_jax.core`.
"""

from .learn import LearnOptions, learn_schedule
from .local_error import local_error_schedule
from .optimize import optimize_schedule, reference_solution, schedule_error
from .teacher import ErrorStats, Teacher, make_teacher, pick_guarded, schedule_stats, split

__all__ = [
    "LearnOptions",
    "learn_schedule",
    "local_error_schedule",
    "optimize_schedule",
    "reference_solution",
    "schedule_error",
    "ErrorStats",
    "Teacher",
    "make_teacher",
    "pick_guarded",
    "schedule_stats",
    "split",
]
