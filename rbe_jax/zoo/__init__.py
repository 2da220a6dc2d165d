"""Models that ship with the library, and what makes and measures them.

- :mod:`.nets` — the Flax NNX U-Net;
- :mod:`.checkpoint` — Orbax checkpoints with a JSON config (save, verify, restore);
- :mod:`.shipped` — the schedules shipped beside a model and ``pretrained_schedule``;
- :mod:`.train` — training with optax (EMA, exact resume);
- :mod:`.data`, :mod:`.metrics` — the digits data and the Frechet distance on a small
  classifier's features.

The weights and schedules live under ``pretrained/``.  Built on :mod:`rbe_jax.core`.
"""

from .checkpoint import CheckpointError, load_denoiser, load_model, load_pretrained, model_info, save_model
from .shipped import SHIPPED_KINDS, pretrained_schedule

__all__ = [
    "CheckpointError",
    "load_denoiser",
    "load_model",
    "load_pretrained",
    "model_info",
    "save_model",
    "SHIPPED_KINDS",
    "pretrained_schedule",
]
