"""Batches: input checks, per-sample broadcasting, compute dtype, and device placement.

Every public entry point that takes a batch of samples ``(B, ...)`` validates it with
:func:`check_noise` on the host, and moves a model whose arrays live on other devices than
the batch onto the batch's devices with :func:`place_model`, before calling its jitted core.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["check_noise", "per_sample", "compute_dtype", "place_model", "place_model_on", "nonfinite_rows", "raise_nonfinite"]


def check_noise(noise) -> jax.Array:
    """Validates a batch of starting noise ``(B, ...)``; returns it as a JAX array."""
    if not hasattr(noise, "shape") or not hasattr(noise, "dtype"):
        raise TypeError(f"noise must be an array of shape (B, ...), got {type(noise).__name__}")
    if len(noise.shape) < 2:
        raise ValueError(f"noise must have shape (B, ...) with at least 2 dimensions, got {tuple(noise.shape)}")
    if noise.shape[0] < 1:
        raise ValueError("noise has an empty batch")
    if not jnp.issubdtype(noise.dtype, jnp.floating):
        raise TypeError(f"noise must be floating point, got dtype {noise.dtype}")
    return jnp.asarray(noise)


def per_sample(v, x: jax.Array) -> jax.Array:
    """A scalar or per-sample ``(B,)`` value shaped to broadcast against ``x`` ``(B, ...)``:
    a scalar stays a scalar, ``(B,)`` becomes ``(B, 1, ..., 1)``."""
    v = jnp.asarray(v)
    return v.reshape((-1,) + (1,) * (x.ndim - 1)) if v.ndim == 1 else v


def compute_dtype(dtype) -> jnp.dtype:
    """The dtype that step coefficients and solver arithmetic use for samples of ``dtype``:
    at least float32 (a bfloat16 alpha-bar of 0.9999 rounds to exactly 1)."""
    return jnp.promote_types(dtype, jnp.float32)


def _replicated_like(sharding: jax.sharding.Sharding) -> jax.sharding.Sharding:
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, PartitionSpec())
    devices = sorted(sharding.device_set, key=lambda d: d.id)
    return NamedSharding(Mesh(np.asarray(devices), ("batch",)), PartitionSpec())


def place_model(model, x):
    """``model`` with every committed array that lives elsewhere than the batch ``x``
    replicated onto ``x``'s devices.

    A model restored from a checkpoint, or built by the user, may hold arrays committed to
    one device; a batch sharded over a mesh lives on several.  jit refuses to mix them, so
    the public entry points call this first (a no-op when ``x`` is traced, uncommitted or on
    one device, and for uncommitted model arrays, which jit places itself).
    """
    if isinstance(x, jax.core.Tracer) or not isinstance(x, jax.Array):
        return model
    if len(x.sharding.device_set) < 2 and not x.committed:  # jit places an uncommitted batch next to the model
        return model
    return place_model_on(model, x.sharding)


def place_model_on(model, sharding: jax.sharding.Sharding):
    """``model`` with every committed array that lives elsewhere than ``sharding``'s
    devices replicated onto them (moved, for a single-device ``sharding``)."""
    devices = sharding.device_set
    target = None

    def move(v):
        nonlocal target
        if isinstance(v, jax.Array) and not isinstance(v, jax.core.Tracer) and v.committed and v.sharding.device_set != devices:
            target = target or _replicated_like(sharding)
            return jax.device_put(v, target)
        return v

    return jax.tree_util.tree_map(move, model)


def nonfinite_rows(values: jax.Array) -> jax.Array:
    """``(B,)`` bool: whether sample ``b`` of ``values`` ``(B, ...)`` holds a NaN or Inf."""
    return ~jnp.all(jnp.isfinite(values).reshape(values.shape[0], -1), axis=1)


def raise_nonfinite(what: str, bad_step, describe) -> None:
    """Raises ``FloatingPointError`` naming the first affected sample, if any.

    Args:
      what: the activity, for the message ("sampling", "calibration (tau=0.3)").
      bad_step: ``(B,)`` first step at which sample ``b`` went non-finite (``-1``: never).
      describe: ``describe(b) -> str``, where sample ``b`` was at that step (grid index,
        half-log-SNR, the model's time).
    """
    bad_step = np.asarray(bad_step)
    if not np.any(bad_step >= 0):
        return
    b = int(np.flatnonzero(bad_step >= 0)[0])
    raise FloatingPointError(
        f"NaN/Inf during {what}: first for sample {b} at step {int(bad_step[b])}, {describe(b)}; "
        f"{int(np.sum(bad_step >= 0))} of {bad_step.size} samples affected (the model's prediction, its "
        "gradient or a solver step was not finite)"
    )
