"""rbe_jax: fast diffusion sampling with the Restricting Backward Error (RBE) schedule.

Public names are re-exported here; each concept lives in the module named for it.
"""

from .rbe.adaptive import AdaptivePaths, adaptive_paths, local_error_paths
from .rbe.error_bound import BackwardError, StepSize, backward_error, field_coefficients, one_step_field, snap_down, step_size
from .core.checks import ModelCheck, PredictionMismatch, check_model
from .zoo.checkpoint import CheckpointError, load_denoiser, load_model, load_pretrained, model_info, save_model
from .rbe.calibration import calibrate, resampled_schedule_from_paths, schedule_from_paths
from .core.models import (
    PREDICTIONS,
    ClassifierFreeGuidance,
    ClassifierGuidance,
    ClipDenoised,
    Denoiser,
    Model,
    Prediction,
    as_model,
    classifier_guidance,
    clip_denoised,
    continuous_time_model,
)
from .tuning.learn import learn_schedule, schedule_stats
from .tuning.local_error import local_error_schedule
from .core.noise import NoiseSchedule
from .tuning.optimize import optimize_schedule, reference_solution, schedule_error
from .core.sampler import rbe_sample
from .app.jobs import sample_job
from .zoo.shipped import pretrained_schedule
from .core.schedule import BASELINES, Schedule, ScheduleError, baseline_schedule
from .tuning.teacher import ErrorStats, Teacher, make_teacher
from .core.solvers import Solver, StepTimes, ddim, dpmpp2m, dpmpp2m_coefficients, dpmpp3m, learned_solver, unipc
from . import testing

__version__ = "0.4.0"

__all__ = [
    "AdaptivePaths",
    "BASELINES",
    "BackwardError",
    "CheckpointError",
    "ErrorStats",
    "ModelCheck",
    "PredictionMismatch",
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "ClipDenoised",
    "Denoiser",
    "Model",
    "PREDICTIONS",
    "Prediction",
    "NoiseSchedule",
    "Schedule",
    "ScheduleError",
    "Solver",
    "Teacher",
    "StepSize",
    "StepTimes",
    "adaptive_paths",
    "as_model",
    "backward_error",
    "baseline_schedule",
    "calibrate",
    "check_model",
    "classifier_guidance",
    "clip_denoised",
    "continuous_time_model",
    "ddim",
    "dpmpp2m",
    "dpmpp2m_coefficients",
    "learned_solver",
    "dpmpp3m",
    "unipc",
    "field_coefficients",
    "learn_schedule",
    "make_teacher",
    "load_denoiser",
    "load_model",
    "load_pretrained",
    "model_info",
    "one_step_field",
    "optimize_schedule",
    "pretrained_schedule",
    "local_error_schedule",
    "local_error_paths",
    "reference_solution",
    "schedule_error",
    "schedule_stats",
    "rbe_sample",
    "sample_job",
    "save_model",
    "resampled_schedule_from_paths",
    "schedule_from_paths",
    "snap_down",
    "step_size",
    "testing",
]
