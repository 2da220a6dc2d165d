"""rbe_jax: fast diffusion sampling with the Restricting Backward Error (RBE) schedule.

The package is layered by dependency; each layer imports only from the ones above it here:

- :mod:`rbe_jax.core` — noise processes, model adapters, solvers, schedules, the sampler;
- :mod:`rbe_jax.rbe` — the RBE method: the backward-error bound, adaptive paths, ``calibrate``;
- :mod:`rbe_jax.tuning` — schedules tuned for a model and a solver: ``learn_schedule``,
  ``optimize_schedule``, the local-error dynamic program, the shared teacher and guard;
- :mod:`rbe_jax.zoo` — the shipped networks and checkpoints, training, the digits data;
- :mod:`rbe_jax.app` — the ``rbe-jax`` command line and sampling jobs.

The names a user needs are re-exported here (``import rbe_jax as R``); the building blocks of
each layer (the step-size rule, the path aggregations, the solver states) are exported by the
layer (``R.rbe.step_size``, ``R.rbe.schedule_from_paths``).

Conventions, one each: every entry point validates its arguments once at its public edge and
then calls private jitted cores; the default solver of every entry point is
:data:`DEFAULT_SOLVER` (``"unipc"``; ``"ddim"`` is the faithful RBE sampler); progress bars are
off by default in the library (``progress=True`` turns one on) and on in the CLI; errors are
the exceptions below or ``ValueError`` / ``TypeError`` naming the bad argument.  Containers:
traced states, loop carries and results are ``NamedTuple``s; pytrees with static fields
(models, solvers, schedules) are ``flax.struct.PyTreeNode``s, which compare by value and so
key the jit cache correctly; static configurations are frozen dataclasses.
"""

from . import testing
from .app import JobError, sample_job
from .core import BASELINES, DEFAULT_SOLVER, NoiseSchedule, Schedule, ScheduleError, Solver, StepTimes, baseline_schedule, ddim, default_spacing, dpmpp2m, dpmpp2m_coefficients, dpmpp3m, learned_solver, rbe_sample, unipc
from .core import PREDICTIONS, ClassifierFreeGuidance, ClassifierGuidance, ClipDenoised, Denoiser, Model, ModelCheck, Prediction, PredictionMismatch, as_model, check_model, classifier_guidance, clip_denoised, continuous_time_model
from .rbe import AdaptivePaths, BackwardError, adaptive_paths, backward_error, calibrate, local_error_paths
from .tuning import ErrorStats, Teacher, learn_schedule, local_error_schedule, make_teacher, optimize_schedule, reference_solution, schedule_error, schedule_stats
from .zoo import CheckpointError, load_denoiser, load_model, load_pretrained, model_info, pretrained_schedule, save_model

__version__ = "0.5.0"

__all__ = [
    # core: sampling on a fixed schedule
    "DEFAULT_SOLVER", "NoiseSchedule", "Schedule", "ScheduleError", "BASELINES", "baseline_schedule", "default_spacing", "rbe_sample",
    "Solver", "StepTimes", "ddim", "dpmpp2m", "dpmpp3m", "unipc", "dpmpp2m_coefficients", "learned_solver",
    "PREDICTIONS", "Prediction", "Model", "Denoiser", "as_model", "continuous_time_model",
    "ClipDenoised", "ClassifierGuidance", "ClassifierFreeGuidance", "clip_denoised", "classifier_guidance",
    "ModelCheck", "PredictionMismatch", "check_model",
    # rbe: the method
    "BackwardError", "backward_error", "AdaptivePaths", "adaptive_paths", "local_error_paths", "calibrate",
    # tuning
    "Teacher", "ErrorStats", "make_teacher", "reference_solution", "schedule_error", "schedule_stats",
    "learn_schedule", "optimize_schedule", "local_error_schedule",
    # zoo and app
    "CheckpointError", "save_model", "load_model", "load_denoiser", "load_pretrained", "model_info", "pretrained_schedule",
    "JobError", "sample_job",
    "testing",
]
