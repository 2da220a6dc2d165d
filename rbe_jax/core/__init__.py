"""The core: what every sampler run needs and nothing more.

- :mod:`.noise` — the noise processes of every Gaussian family (VP table and
  continuous, VE, EDM, flow), reduced to half-log-SNR ``lam``;
- :mod:`.models` — adapters from a user's network (eps / x0 / v / score / velocity, Linen
  ``apply`` or NNX module) to the one internal form, a ``Denoiser``;
- :mod:`.checks` — the explicit probe for a mislabelled prediction;
- :mod:`.solvers` — the solver steps (DDIM, DPM-Solver++ 2M/3M, UniPC, learned 2M);
- :mod:`.schedule` — the ``Schedule`` pytree, its JSON file and the fixed spacings;
- :mod:`.sampler` — ``rbe_sample``: one jitted ``lax.scan`` over a schedule.

Nothing here imports from the other layers (``rbe``, ``tuning``, ``zoo``, ``app``).
"""

from .checks import ModelCheck, PredictionMismatch, check_model
from .models import (
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
from .noise import NoiseSchedule, Point
from .sampler import rbe_sample
from .schedule import BASELINES, Schedule, ScheduleError, baseline_schedule, default_spacing
from .solvers import (
    DEFAULT_SOLVER,
    CoefficientState,
    DPMState,
    MultistepState,
    Solver,
    StepTimes,
    ddim,
    dpmpp2m,
    dpmpp2m_coefficients,
    dpmpp3m,
    get_solver,
    learned_solver,
    unipc,
)

__all__ = [
    "ModelCheck",
    "PredictionMismatch",
    "check_model",
    "PREDICTIONS",
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "ClipDenoised",
    "Denoiser",
    "Model",
    "Prediction",
    "as_model",
    "classifier_guidance",
    "clip_denoised",
    "continuous_time_model",
    "NoiseSchedule",
    "Point",
    "rbe_sample",
    "BASELINES",
    "Schedule",
    "ScheduleError",
    "baseline_schedule",
    "default_spacing",
    "DEFAULT_SOLVER",
    "CoefficientState",
    "DPMState",
    "MultistepState",
    "Solver",
    "StepTimes",
    "ddim",
    "dpmpp2m",
    "dpmpp2m_coefficients",
    "dpmpp3m",
    "get_solver",
    "learned_solver",
    "unipc",
]
