"""The RBE method (Gao et al., arXiv 2304.11446): schedules from a backward-error bound.

- :mod:`.error_bound` — the pure pieces: the one-grid-step field, the backward-error
  indicator, the step-size rule and the snap-down to the grid;
- :mod:`.adaptive` — per-sample adaptive paths (a jitted ``lax.while_loop`` per batch);
- :mod:`.calibration` — from those paths to one fixed schedule: ``calibrate``.

Built on :mod:`rbe_jax.core` only.
"""

from .adaptive import AdaptivePaths, adaptive_paths, local_error_paths
from .calibration import calibrate, resampled_schedule_from_paths, schedule_from_paths
from .error_bound import BackwardError, StepSize, backward_error, field_coefficients, one_step_field, snap_down, step_size

__all__ = [
    "AdaptivePaths",
    "adaptive_paths",
    "local_error_paths",
    "calibrate",
    "resampled_schedule_from_paths",
    "schedule_from_paths",
    "BackwardError",
    "StepSize",
    "backward_error",
    "field_coefficients",
    "one_step_field",
    "snap_down",
    "step_size",
]
