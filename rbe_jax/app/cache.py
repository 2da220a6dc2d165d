"""Where calibrated schedules are cached between runs of the CLI.

Calibrating an RBE schedule for a guided model (a label and a guidance weight) costs minutes
on a CPU, so ``rbe-jax sample --label L --guidance W`` stores each one it makes and reuses
it on the next identical call.  The cache lives in

    $RBE_JAX_CACHE, else $XDG_CACHE_HOME/rbe_jax, else ~/.cache/rbe_jax

under ``schedules/<model fingerprint>/``, where the fingerprint is the SHA-256 of the
model's ``config.json`` (which records the checksum of every parameter file), so a retrained
or edited model never picks up another model's schedules.  Deleting the folder is safe.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core._io import sha256_file

__all__ = ["cache_dir", "model_fingerprint", "cached_schedule_path"]


def cache_dir() -> Path:
    """The cache root (see the module docstring); not created until something is written."""
    if os.environ.get("RBE_JAX_CACHE"):
        return Path(os.environ["RBE_JAX_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rbe_jax"


def model_fingerprint(model_dir) -> str:
    """First 16 hex digits of the SHA-256 of ``model_dir/config.json``."""
    return sha256_file(Path(model_dir) / "config.json")[:16]


def cached_schedule_path(model_dir, name: str) -> Path:
    """The cache file for schedule ``name`` (e.g. ``rbe_nfe10_label3_w2_ddim.json``) of the
    model in ``model_dir``."""
    return cache_dir() / "schedules" / model_fingerprint(model_dir) / name
