"""The model protocol: anything with ``model(x, t) -> eps``.

``x`` has shape ``(B, ...)`` and ``t`` is an int32 array ``(B,)`` of ORIGINAL training
timesteps.  Plain functions are accepted by every public entry point; to pass a model
through ``jax.jit`` it must be a pytree, which :func:`as_model` provides (the function is
static, the parameters are leaves).  Flax NNX modules are pytrees already and need no
wrapping; a Linen module plugs in as ``as_model(module.apply, variables)``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ._batch import compute_dtype, per_sample
from .noise import NoiseSchedule

__all__ = [
    "Model",
    "EpsFromX0",
    "EpsFromV",
    "ClipDenoised",
    "ClassifierGuidance",
    "ClassifierFreeGuidance",
    "as_model",
    "prepare_model",
    "call_model",
    "is_pytree_model",
    "clip_denoised",
    "classifier_guidance",
    "ContinuousTime",
    "continuous_time_model",
]

PREDICTIONS = ("eps", "x0", "v")


class Model(struct.PyTreeNode):
    """A model function closed over its parameters, as a pytree.

    Attributes:
      fn: ``fn(x, t)`` or, when ``params`` is given, ``fn(params, x, t)`` (a Linen
        ``apply``).  Static: it is part of the jit cache key, not a traced value.
      params: any pytree of arrays (the leaves), or ``None``.
    """

    fn: Callable = struct.field(pytree_node=False)
    params: Any = None
    takes_params: bool = struct.field(pytree_node=False, default=False)

    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        if self.takes_params:
            return self.fn(self.params, x, t)
        return self.fn(x, t)


class _Reparam(struct.PyTreeNode):
    """Shared body of the x0 / v -> eps adapters: holds the inner model and alpha-bar table."""

    model: Any
    alpha_bar: jax.Array  # (T,) table indexed by original timestep

    def _coeffs(self, x, t):
        """``(alpha, sigma)`` at timesteps ``t``, shaped ``(B, 1, ...)``, in at least float32
        (in bfloat16 an alpha-bar of 0.9999 rounds to 1 and sigma to 0)."""
        a = per_sample(jnp.asarray(self.alpha_bar, compute_dtype(x.dtype))[t], x)
        return jnp.sqrt(a), jnp.sqrt(1.0 - a)


class EpsFromX0(_Reparam):
    """Wraps a model that predicts clean data x0: ``eps = (x - alpha x0) / sigma``."""

    def __call__(self, x, t):
        alpha, sigma = self._coeffs(x, t)
        return (x - alpha * self.model(x, t)) / sigma


class EpsFromV(_Reparam):
    """Wraps a model that predicts ``v = alpha eps - sigma x0``: ``eps = alpha v + sigma x``."""

    def __call__(self, x, t):
        alpha, sigma = self._coeffs(x, t)
        return alpha * self.model(x, t) + sigma * x


class _Callable:
    """A callable that is not a pytree of arrays (a plain or jitted function, a callable
    object, a ``functools.partial``), held by identity.

    It is a static part of :class:`Model`: jit caches compiled code on the object itself
    (hash and equality by identity, so unhashable callables work too), and any arrays it
    closes over enter the computation as constants.
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)

    def __hash__(self):
        return id(self.fn)

    def __eq__(self, other):
        return isinstance(other, _Callable) and other.fn is self.fn

    def __repr__(self):
        return f"_Callable({self.fn!r})"


def _is_array_leaf(v) -> bool:
    return isinstance(v, (jax.Array, np.ndarray, np.generic, bool, int, float, complex))


def is_pytree_model(model) -> bool:
    """Whether ``model`` can cross ``jax.jit`` as an argument: a pytree (NNX module,
    :class:`Model`, a ``flax.struct`` dataclass) whose leaves are all arrays or numbers."""
    leaves = jax.tree_util.tree_leaves(model)
    if len(leaves) == 1 and leaves[0] is model:  # not a container: a function or object
        return False
    return all(_is_array_leaf(v) for v in leaves)


def as_model(
    fn: Callable,
    params: Any = None,
    *,
    prediction: str = "eps",
    noise_schedule: NoiseSchedule | None = None,
):
    """Turns a function into a jit-friendly eps model.

    Args:
      fn: ``fn(x, t)``, or ``fn(params, x, t)`` when ``params`` is given (e.g. a Linen
        ``module.apply`` with its variables).  A pytree model (an NNX module, a
        :class:`Model`, :class:`rbe_jax.testing.GaussianMixture`) is returned as is when no
        params are given.
      params: the parameters passed as the first argument of ``fn``.
      prediction: what ``fn`` outputs: ``"eps"`` (noise), ``"x0"`` (clean data) or ``"v"``.
      noise_schedule: the model's full TRAINING schedule (indexed by original timestep),
        required to convert ``"x0"`` and ``"v"`` outputs into eps.

    Returns:
      A pytree callable ``model(x, t) -> eps``.
    """
    if not callable(fn):
        raise TypeError(f"a model must be callable as model(x, t); got {type(fn).__name__}")
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    if params is not None:
        model = Model(fn=_Callable(fn), params=params, takes_params=True)
    else:
        model = prepare_model(fn)
    if prediction == "eps":
        return model
    if noise_schedule is None:
        raise ValueError(f"prediction={prediction!r} needs noise_schedule= (the training schedule)")
    cls = EpsFromX0 if prediction == "x0" else EpsFromV
    return cls(model=model, alpha_bar=_table(noise_schedule))


def prepare_model(model):
    """The form in which every public entry point passes ``model`` to its jitted core.

    A pytree of arrays (an NNX module, :class:`Model`, a wrapper of this module) is
    returned as is: its arrays are traced arguments.  Any other callable (a plain or
    jitted function, a callable object, a ``functools.partial``) is wrapped in a
    :class:`Model` that holds it statically, by identity: jit compiles once per such
    object and closes over its arrays.

    Raises:
      TypeError: ``model`` is not callable.
    """
    if model is None or not callable(model):
        raise TypeError(f"model must be callable as model(x, t) -> eps; got {type(model).__name__}")
    return model if is_pytree_model(model) else Model(fn=_Callable(model))


def call_model(model, x: jax.Array, t: jax.Array) -> jax.Array:
    """``model(x, t)`` with its output checked at trace time (shapes are static, so the
    check costs nothing at run time and works under ``jax.jit``).

    Errors raised by the model itself propagate unchanged.

    Raises:
      ValueError: the output is not one floating-point array shaped like ``x``.
    """
    out = model(x, t)
    if not hasattr(out, "shape") or not hasattr(out, "dtype"):
        raise ValueError(f"the model must return one array (eps); it returned {type(out).__name__}")
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(
            f"the model returned shape {tuple(out.shape)} for input of shape {tuple(x.shape)}; "
            "eps must have the shape of x"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"the model returned dtype {out.dtype}; eps must be floating point")
    return out


# ---------------------------------------------------------------------------- eps transforms
class ClipDenoised(_Reparam):
    """x0 clipping (the reference's ``clip_denoised``) as a model wrapper.

    eps is turned into the predicted data ``x0 = (x - sigma eps) / alpha``, which is clipped
    to ``[lo, hi]`` (or, with ``dynamic_quantile``, thresholded per sample as DPM-Solver++ /
    Imagen do: ``s = max(1, quantile(|x0|, q))``, ``x0 <- clip(x0, -s, s) / s``), and eps is
    re-derived from it.  Gradients flow through the clip, so the backward-error indicator,
    the adaptive paths, calibration and every solver see the clipped model unchanged.
    """

    lo: float = struct.field(pytree_node=False, default=-1.0)
    hi: float = struct.field(pytree_node=False, default=1.0)
    dynamic_quantile: float | None = struct.field(pytree_node=False, default=None)

    def __call__(self, x, t):
        alpha, sigma = self._coeffs(x, t)
        x0 = (x - sigma * self.model(x, t)) / alpha
        if self.dynamic_quantile is None:
            x0 = jnp.clip(x0, self.lo, self.hi)
        else:
            flat = jnp.abs(x0).reshape(x0.shape[0], -1)
            s = jnp.maximum(jnp.quantile(flat, self.dynamic_quantile, axis=1), 1.0)
            s = per_sample(s, x)
            x0 = jnp.clip(x0, -s, s) / s
        return (x - alpha * x0) / sigma


class ClassifierGuidance(_Reparam):
    """Classifier guidance (the reference's ``cond_fn``): ``eps <- eps - sigma * scale * g``
    with ``g = cond_fn(x, t)`` the gradient of ``log p(y | x, t)`` (the label closed over by
    ``cond_fn``).  ``cond_fn`` is a model-like pytree or function of ``(x, t)``."""

    cond_fn: Any = None
    scale: float = 1.0

    def __call__(self, x, t):
        _, sigma = self._coeffs(x, t)
        return self.model(x, t) - sigma * self.scale * self.cond_fn(x, t)


class ClassifierFreeGuidance(struct.PyTreeNode):
    """Classifier-free guidance: ``eps = (1 + w) eps(x, t, y) - w eps(x, t, null)``.

    ``model`` is conditional, ``model(x, t, y) -> eps`` with ``y`` int labels ``(B,)``;
    both branches run as ONE model call on the doubled batch.

    A ``(B,)`` label array ties the wrapper to batches of exactly ``B`` samples: calibrate
    such a model with ``search_samples >= B`` and no ``chunk_size`` (a scalar label has no
    such limit).

    Attributes:
      model: the conditional model (a pytree, e.g. an NNX module).
      label: int label(s), scalar or ``(B,)``.
      scale: the guidance weight ``w`` (0 = plain conditional sampling).
      null_label: the label the model was trained with for "no label".
    """

    model: Any
    label: jax.Array
    scale: float = 1.0
    null_label: int = struct.field(pytree_node=False, default=-1)

    def __call__(self, x, t):
        B = x.shape[0]
        y = jnp.broadcast_to(jnp.asarray(self.label, jnp.int32), (B,))
        null = jnp.full((B,), self.null_label, jnp.int32)
        eps = self.model(jnp.concatenate([x, x]), jnp.concatenate([t, t]), jnp.concatenate([y, null]))
        cond, uncond = eps[:B], eps[B:]
        return cond + self.scale * (cond - uncond)


class ContinuousTime(struct.PyTreeNode):
    """Calls a continuous-time model ``fn(x, t_cont)`` at ``times[t]`` for the integer
    timestep indices ``t`` that the rest of the library uses."""

    model: Any
    times: jax.Array  # (N,) float

    def __call__(self, x, t):
        return self.model(x, jnp.asarray(self.times, x.dtype)[t])


def continuous_time_model(fn, noise_schedule: NoiseSchedule, params: Any = None) -> ContinuousTime:
    """Adapts a continuous-time eps model ``fn(x, t)`` (``t`` float ``(B,)`` in ``(0, 1]``;
    ``fn(params, x, t)`` with ``params``) to a schedule from
    :meth:`NoiseSchedule.vp_continuous` (the full fine schedule, not a respaced grid)."""
    if noise_schedule.times is None:
        raise ValueError("noise_schedule has no continuous times: build it with NoiseSchedule.vp_continuous")
    if len(noise_schedule) != noise_schedule.num_train_timesteps:
        raise ValueError("noise_schedule must be the full fine schedule, not a respaced grid")
    return ContinuousTime(model=as_model(fn, params), times=jnp.asarray(noise_schedule.times, jnp.float32))


def _table(noise_schedule: NoiseSchedule) -> jax.Array:
    if len(noise_schedule) != noise_schedule.num_train_timesteps:
        raise ValueError("noise_schedule must be the full training schedule, not a respaced grid")
    return jnp.asarray(noise_schedule.alpha_bar, jnp.float32)


def clip_denoised(model, noise_schedule: NoiseSchedule, lo: float = -1.0, hi: float = 1.0, dynamic_quantile: float | None = None) -> ClipDenoised:
    """Wraps ``model`` with x0 clipping to ``[lo, hi]`` or dynamic thresholding (see
    :class:`ClipDenoised`); ``noise_schedule`` is the model's full training schedule."""
    if not lo < hi:
        raise ValueError(f"clip range must satisfy lo < hi, got [{lo}, {hi}]")
    if dynamic_quantile is not None and not 0.0 < dynamic_quantile <= 1.0:
        raise ValueError(f"dynamic_quantile must lie in (0, 1], got {dynamic_quantile}")
    return ClipDenoised(model=prepare_model(model), alpha_bar=_table(noise_schedule), lo=float(lo), hi=float(hi), dynamic_quantile=dynamic_quantile)


def classifier_guidance(model, cond_fn, noise_schedule: NoiseSchedule, scale: float = 1.0) -> ClassifierGuidance:
    """Wraps ``model`` with classifier guidance (see :class:`ClassifierGuidance`)."""
    return ClassifierGuidance(model=prepare_model(model), alpha_bar=_table(noise_schedule), cond_fn=prepare_model(cond_fn), scale=scale)
