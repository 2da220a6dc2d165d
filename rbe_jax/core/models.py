"""Models: what users hand over, and the one internal form every sampler step uses.

A user's model is a function of the model's own ``x`` and time, ``model(x, t) -> P``, where
``P`` is one of :data:`PREDICTIONS` and ``t`` is the model's native time input (the training
timestep of a discrete table as a float32 array, score_sde's ``t``, EDM's ``sigma``, a flow
model's ``t``; see :class:`rbe_jax.NoiseSchedule`).  :func:`as_model` wraps it, once, at the
boundary, into a :class:`Denoiser`: ``denoiser(x_vp, point) -> Prediction(eps, x0)``, with
``x_vp`` in the variance-preserving scaling and ``point`` a :class:`rbe_jax.core.noise.Point`.
Nothing past the adapter knows the family.  Clipping and classifier guidance
(:class:`ClipDenoised`, :class:`ClassifierGuidance`) act on that internal form; classifier-free
guidance (:class:`ClassifierFreeGuidance`) combines the native outputs, so it is itself a
user-level model.

Every public entry point accepts a bare callable or pytree (an eps-prediction model of the
schedule's own noise process, the common case) as well as a :class:`Denoiser`.  Pytrees of
arrays (NNX modules, :class:`Model`, these wrappers) are traced arguments; a pytree with other
leaves (an Equinox module) has its arrays traced and the rest held statically
(:class:`ArraySplit`); any other callable is held statically, by value where that is safe (a
Linen ``module.apply`` read twice is one compilation), else by identity (a plain function:
one compilation per function object).  A Linen module plugs in as
``as_model(module.apply, variables, ...)``.

The dtype rule, one for every code path: the model receives ``x`` in the samples' dtype; both
fields of every :class:`Prediction` (of :class:`Denoiser` and of the wrappers on the internal
form) are in the compute dtype (at least float32, see
:func:`rbe_jax.core._batch.compute_dtype`).  The one formula between the two parametrisations
is :func:`x0_of_eps` / :func:`eps_of_x0`.
"""

from __future__ import annotations

import functools
import types
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ._batch import compute_dtype, per_sample
from .noise import NoiseSchedule, Point, _Process

__all__ = [
    "Model",
    "ArraySplit",
    "Prediction",
    "Denoiser",
    "ClipDenoised",
    "ClassifierGuidance",
    "ClassifierFreeGuidance",
    "PREDICTIONS",
    "as_model",
    "as_denoiser",
    "prepare_model",
    "call_model",
    "is_pytree_model",
    "clip_denoised",
    "classifier_guidance",
    "continuous_time_model",
    "x0_of_eps",
    "eps_of_x0",
]

PREDICTIONS = ("eps", "x0", "v", "score", "velocity")
# predictions that give x0 where alpha = 0 (pure noise): a step from there needs one of them
X0_AT_PURE_NOISE = ("x0", "v", "velocity")


class Prediction(NamedTuple):
    """A model's output in the internal form, both parametrisations (each ``(B, ...)``):
    ``x_vp = alpha x0 + sigma eps``.  Whichever one a caller does not use costs nothing
    under jit."""

    eps: jax.Array
    x0: jax.Array


class Model(struct.PyTreeNode):
    """A model function closed over its parameters, as a pytree.

    Attributes:
      fn: ``fn(x, t)`` or, when ``params`` is given, ``fn(params, x, t)`` (a Linen
        ``apply``).  Static: it is part of the jit cache key, not a traced value.
      params: any pytree (its array leaves are traced; a pytree with other leaves, such as an
        Equinox module's activation functions, is held as an :class:`ArraySplit`), or ``None``.
    """

    fn: Callable = struct.field(pytree_node=False)
    params: Any = None
    takes_params: bool = struct.field(pytree_node=False, default=False)

    def __call__(self, x: jax.Array, t: jax.Array, *args) -> jax.Array:
        if self.takes_params:
            params = self.params.join() if isinstance(self.params, ArraySplit) else self.params
            return self.fn(params, x, t, *args)
        return self.fn(x, t, *args)


def _by_value(obj):
    """How a static object is compared: by value when it is hashable (a Linen module is a
    frozen dataclass compared by its fields, a float, a string, a function), else by
    identity (arrays, objects that define ``__eq__`` without ``__hash__``)."""
    if isinstance(obj, (jax.Array, np.ndarray)):
        return ("id", id(obj))
    try:
        hash(obj)
    except TypeError:
        return ("id", id(obj))
    return ("value", obj)


def _callable_key(fn):
    """The static key of a callable: a bound method is its function and its owner (so
    ``module.apply`` read twice, or read from an equal Linen module, is one key); a
    ``functools.partial`` its function and arguments (each by value where hashable);
    anything else (a function, a jitted function, a callable object) its identity."""
    if isinstance(fn, types.MethodType):
        return ("method", fn.__func__, _by_value(fn.__self__))
    if isinstance(fn, functools.partial):
        kw = tuple(sorted((k, _by_value(v)) for k, v in fn.keywords.items()))
        return ("partial", _callable_key(fn.func), tuple(_by_value(a) for a in fn.args), kw)
    return ("id", id(fn))


def _keys_equal(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:  # an owner whose __eq__ does not give one bool
        return False


class _Callable:
    """A callable that is not a pytree of arrays (a plain or jitted function, a bound method
    such as a Linen ``module.apply``, a callable object, a ``functools.partial``), held
    statically.

    It is a static part of :class:`Model`: jit caches compiled code on its key (see
    :func:`_callable_key`: equal bound methods and partials share one compilation; other
    callables compare by identity, so unhashable callables work too), and any arrays it
    closes over enter the computation as constants.  It keeps ``fn`` alive, so an identity in
    its key is never reused by another object while the key exists.
    """

    __slots__ = ("fn", "_key")

    def __init__(self, fn: Callable):
        self.fn = fn
        self._key = _callable_key(fn)

    def __call__(self, *args):
        return self.fn(*args)

    def __hash__(self):
        try:
            return hash(self._key)
        except TypeError:  # an owner that is hashable but fails inside a tuple's hash
            return id(self.fn)

    def __eq__(self, other):
        return isinstance(other, _Callable) and (other.fn is self.fn or _keys_equal(self._key, other._key))

    def __repr__(self):
        return f"_Callable({self.fn!r})"


def _is_array_leaf(v) -> bool:
    return isinstance(v, (jax.Array, np.ndarray, np.generic, bool, int, float, complex))


_ARRAY = object()  # where an ArraySplit's static part has an array leaf


class _StaticLeaves:
    """The structure and the non-array leaves of a pytree, hashable and compared by value
    (each leaf by :func:`_by_value`)."""

    __slots__ = ("treedef", "leaves", "_key")

    def __init__(self, treedef, leaves: tuple):
        self.treedef = treedef
        self.leaves = leaves
        self._key = (treedef, tuple(("array",) if v is _ARRAY else _by_value(v) for v in leaves))

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _StaticLeaves) and _keys_equal(self._key, other._key)


class ArraySplit(struct.PyTreeNode):
    """A pytree with leaves that are not arrays (an Equinox module holds its activation
    functions as leaves), split as ``eqx.partition(tree, eqx.is_array)`` does: the array
    leaves are traced, the structure and the other leaves are static, compared by value.

    Attributes:
      arrays: the array leaves, in tree order.
      rest: the structure and the other leaves (static).
    """

    arrays: tuple
    rest: _StaticLeaves = struct.field(pytree_node=False)

    @classmethod
    def of(cls, tree) -> "ArraySplit":
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        arrays = tuple(v for v in leaves if _is_array_leaf(v))
        return cls(arrays=arrays, rest=_StaticLeaves(treedef, tuple(_ARRAY if _is_array_leaf(v) else v for v in leaves)))

    def join(self):
        """The original pytree, with the (possibly traced) array leaves put back."""
        arrays = iter(self.arrays)
        return self.rest.treedef.unflatten([next(arrays) if v is _ARRAY else v for v in self.rest.leaves])

    def __call__(self, *args):
        return self.join()(*args)


def _is_container(tree) -> bool:
    leaves = jax.tree_util.tree_leaves(tree)
    return not (len(leaves) == 1 and leaves[0] is tree)


def is_pytree_model(model) -> bool:
    """Whether ``model`` can cross ``jax.jit`` as an argument: a pytree (NNX module,
    :class:`Model`, a ``flax.struct`` dataclass) whose leaves are all arrays or numbers."""
    return _is_container(model) and all(_is_array_leaf(v) for v in jax.tree_util.tree_leaves(model))


def traceable(tree):
    """``tree`` in a form that crosses ``jax.jit``: as is when every leaf is an array or a
    number, else an :class:`ArraySplit` (arrays traced, the rest static by value)."""
    return tree if is_pytree_model(tree) or tree is None else ArraySplit.of(tree)


def prepare_model(model):
    """A user-level model in the form jitted code takes: a pytree of arrays as is, a pytree
    with other leaves (an Equinox module) as an :class:`ArraySplit`, any other callable
    wrapped in a :class:`Model` that holds it statically (see :class:`_Callable`).

    Raises:
      TypeError: ``model`` is not callable.
    """
    if model is None or not callable(model):
        raise TypeError(f"model must be callable as model(x, t); got {type(model).__name__}")
    if _is_container(model):
        return traceable(model)
    return Model(fn=_Callable(model))


def call_model(model, x: jax.Array, t: jax.Array, *args) -> jax.Array:
    """``model(x, t)`` with its output checked at trace time (shapes are static, so the
    check costs nothing at run time and works under ``jax.jit``).  Errors raised by the
    model itself propagate unchanged.

    Raises:
      ValueError: the output is not one floating-point array shaped like ``x``.
    """
    out = model(x, t, *args)
    if not hasattr(out, "shape") or not hasattr(out, "dtype"):
        raise ValueError(f"the model must return one array; it returned {type(out).__name__}")
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(
            f"the model returned shape {tuple(out.shape)} for input of shape {tuple(x.shape)}; "
            "its prediction must have the shape of x"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"the model returned dtype {out.dtype}; its prediction must be floating point")
    return out


# ------------------------------------------------------------------------------ the adapter
class _InternalForm:
    """Marker of models in the internal form ``(x_vp, point) -> Prediction``; each has
    ``process`` (the noise process it was made for) and ``prediction`` (the innermost
    model's native prediction)."""


class _OnInternalForm(_InternalForm):
    """A wrapper of a model in the internal form (its ``model``): the same process and
    prediction."""

    @property
    def process(self):
        return self.model.process

    @property
    def prediction(self):
        return self.model.prediction

    @property
    def noise_schedule(self):
        return self.model.noise_schedule


def x0_of_eps(x, eps, alpha, sigma):
    """The data prediction of a noise prediction at ``x = alpha x0 + sigma eps`` (VP scaling)."""
    return (x - sigma * eps) / alpha


def eps_of_x0(x, x0, alpha, sigma):
    """The noise prediction of a data prediction at ``x = alpha x0 + sigma eps`` (VP scaling)."""
    return (x - alpha * x0) / sigma


def _coeffs(pt: Point, x: jax.Array):
    """``(alpha, sigma, scale)`` of ``pt`` in the compute dtype, shaped to broadcast against
    ``x`` ``(B, ...)``."""
    cdt = compute_dtype(x.dtype)
    return tuple(per_sample(jnp.asarray(v, cdt), x) for v in (pt.alpha, pt.sigma, pt.scale))


class Denoiser(_InternalForm, struct.PyTreeNode):
    """A user's model in the internal form: ``denoiser(x_vp, point) -> Prediction``.

    Feeds the model ``x_vp * point.scale`` (its own scaling) and its native time
    ``point.t``, and converts its output, in the compute dtype:

    - ``eps``: ``x0 = (x - sigma eps) / alpha``;
    - ``x0`` (an EDM denoiser ``D(x, sigma)``): ``eps = (x - alpha x0) / sigma``;
    - ``v`` = ``alpha eps - sigma x0`` in the VP scaling: ``x0 = alpha x - sigma v``,
      ``eps = sigma x + alpha v``;
    - ``score`` = ``grad_x log p_t(x)`` in the model's own scaling: ``eps = -sigma_f score``;
    - ``velocity`` = ``d x_t / dt`` (``eps - x0`` for flow): solved from ``x_t = alpha_f x0 +
      sigma_f eps`` and ``v = alpha_f' x0 + sigma_f' eps``.

    Attributes:
      net: the user's model (a pytree, or a :class:`Model` holding a function).
      process: the noise process the model was trained with (static).
      prediction: one of :data:`PREDICTIONS` (static).
      quantize: feed the nearest integer timestep (int32) instead of a fractional one (for
        discrete models that only take integers).
      noise_schedule: the :class:`NoiseSchedule` the model was trained with, when it was
        wrapped with one (static, compared by value): the tuners take it from here when
        they are not given one.
    """

    net: Any
    process: _Process = struct.field(pytree_node=False)
    prediction: str = struct.field(pytree_node=False, default="eps")
    quantize: bool = struct.field(pytree_node=False, default=False)
    noise_schedule: NoiseSchedule | None = struct.field(pytree_node=False, default=None)

    def raw(self, x: jax.Array, pt: Point, *args) -> jax.Array:
        """The model's own output at ``x_vp`` (shape-checked), fed its scaling and time."""
        B = x.shape[0]
        if self.process.family != "vp":
            x = (x.astype(compute_dtype(x.dtype)) * per_sample(pt.scale, x)).astype(x.dtype)
        t = jnp.broadcast_to(jnp.asarray(pt.t), (B,))
        t = jnp.round(t).astype(jnp.int32) if self.quantize else t.astype(compute_dtype(x.dtype))
        return call_model(self.net, x, t, *args)

    def convert(self, out: jax.Array, x: jax.Array, pt: Point) -> Prediction:
        """The :class:`Prediction` of the model's output ``out`` at ``x_vp``."""
        cdt = compute_dtype(x.dtype)
        xc = x.astype(cdt)
        alpha, sigma, scale = _coeffs(pt, x)
        p = self.prediction
        o = out.astype(cdt)
        if p == "eps":
            return Prediction(eps=o, x0=x0_of_eps(xc, o, alpha, sigma))
        if p == "x0":
            return Prediction(eps=eps_of_x0(xc, o, alpha, sigma), x0=o)
        if p == "v":
            return Prediction(eps=sigma * xc + alpha * o, x0=alpha * xc - sigma * o)
        if p == "score":
            eps = -(sigma * scale) * o
            return Prediction(eps=eps, x0=x0_of_eps(xc, eps, alpha, sigma))
        # velocity: [x_f; v] = [[a, s], [a', s']] [x0; eps] in the model's own scaling
        t = per_sample(jnp.broadcast_to(jnp.asarray(pt.t, cdt), (x.shape[0],)), x)
        da, ds = (jnp.asarray(c, cdt) for c in self.process.velocity_coeffs(t, jnp))
        a, s, xf = alpha * scale, sigma * scale, xc * scale
        det = a * ds - s * da
        return Prediction(eps=(a * o - da * xf) / det, x0=(ds * xf - s * o) / det)

    def __call__(self, x: jax.Array, pt: Point) -> Prediction:
        return self.convert(self.raw(x, pt), x, pt)


def _check_prediction(prediction: str, process: _Process) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    if prediction == "velocity" and not process.has_velocity:
        raise ValueError(
            "prediction='velocity' needs a continuous-time process (flow, vp_continuous, ve, edm); "
            "a discrete table has no time derivative"
        )


def as_model(
    fn: Callable,
    params: Any = None,
    *,
    prediction: str = "eps",
    noise_schedule: NoiseSchedule | None = None,
    quantize: bool = False,
):
    """Wraps a user's model for the samplers.

    Args:
      fn: ``fn(x, t)``, or ``fn(params, x, t)`` when ``params`` is given (e.g. a Linen
        ``module.apply`` with its variables); ``t`` is the model's native time (see the
        module docstring).  A pytree model (an NNX module, :class:`Model`) needs no params.
      params: the parameters passed as the first argument of ``fn``: any pytree; its array
        leaves are traced, its other leaves (an Equinox module's functions) held statically.
        ``fn`` is held statically and compared by value where that is safe: a Linen
        ``module.apply`` read again, or from an equal module, reuses the compiled code.
      prediction: what ``fn`` outputs, one of :data:`PREDICTIONS` (``"x0"`` for an EDM
        denoiser, ``"velocity"`` for a flow model).
      noise_schedule: the :class:`NoiseSchedule` the model was trained with (any grid of
        it).  Required unless ``prediction="eps"``: without it an eps model is returned as
        a plain (jit-friendly) model that takes its process from the schedule it samples.
      quantize: feed the nearest integer training timestep (int32): for discrete models
        that index tables by ``t``.
    Returns:
      A :class:`Denoiser` (with ``noise_schedule``) or a pytree model ``model(x, t) -> eps``.
    """
    if not callable(fn):
        raise TypeError(f"a model must be callable as model(x, t); got {type(fn).__name__}")
    net = Model(fn=_Callable(fn), params=traceable(params), takes_params=True) if params is not None else prepare_model(fn)
    if noise_schedule is None:
        if prediction != "eps":
            raise ValueError(f"prediction={prediction!r} needs noise_schedule= (the model's training noise schedule)")
        if quantize:
            raise ValueError("quantize=True needs noise_schedule= (the model's training table)")
        return net
    if not isinstance(noise_schedule, NoiseSchedule):
        raise TypeError(f"noise_schedule must be a NoiseSchedule, got {type(noise_schedule).__name__}")
    _check_prediction(prediction, noise_schedule.process)
    return Denoiser(net=net, process=noise_schedule.process, prediction=prediction, quantize=bool(quantize), noise_schedule=noise_schedule)


def model_noise_schedule(model, noise_schedule: NoiseSchedule | None = None, what: str = "noise_schedule") -> NoiseSchedule:
    """``noise_schedule`` if given, else the one ``model`` carries (a :class:`Denoiser` made
    by :func:`as_model` with ``noise_schedule=``, or loaded by :func:`rbe_jax.load_pretrained`).

    Raises:
      TypeError: ``noise_schedule`` is not a :class:`NoiseSchedule`.
      ValueError: neither is there.
    """
    if noise_schedule is None:
        noise_schedule = getattr(model, "noise_schedule", None) if isinstance(model, _InternalForm) else None
        if noise_schedule is None:
            raise ValueError(
                f"{what} is needed: this model carries none (wrap it with R.as_model(fn, ..., noise_schedule=...), "
                "or load a shipped one with R.load_pretrained)"
            )
    if not isinstance(noise_schedule, NoiseSchedule):
        raise TypeError(f"{what} must be a NoiseSchedule, got {type(noise_schedule).__name__}")
    return noise_schedule


def as_denoiser(model, noise_schedule: NoiseSchedule):
    """The internal form of ``model`` for sampling on ``noise_schedule``: a model in the
    internal form is checked against its process; any other model is taken as an eps
    model of that process.

    Raises:
      TypeError: ``model`` is not callable.
      ValueError: ``model`` was wrapped for another noise process.
    """
    if isinstance(model, _InternalForm):
        if model.process != noise_schedule.process:
            raise ValueError(
                f"the model was wrapped for noise process {model.process.spec()}, but the schedule "
                f"belongs to {noise_schedule.describe()}: make the schedule from the model's noise schedule"
            )
        return model
    return Denoiser(net=prepare_model(model), process=noise_schedule.process, prediction="eps")


def continuous_time_model(fn, noise_schedule: NoiseSchedule, params: Any = None) -> Denoiser:
    """An eps model ``fn(x, t)`` of a continuous-time process (``t`` float ``(B,)``), i.e.
    ``as_model(fn, params, noise_schedule=noise_schedule)``."""
    if noise_schedule.times is None:
        raise ValueError("noise_schedule has no continuous times: build it with NoiseSchedule.vp_continuous (or ve, edm, flow)")
    return as_model(fn, params, noise_schedule=noise_schedule)


# ---------------------------------------------------------------------------- on the internal form
class ClipDenoised(_OnInternalForm, struct.PyTreeNode):
    """x0 clipping (the reference's ``clip_denoised``) on the internal form.

    The prediction's x0 is clipped to ``[lo, hi]`` (or, with ``dynamic_quantile``, thresholded
    per sample as DPM-Solver++ / Imagen do: ``s = max(1, quantile(|x0|, q))``, ``x0 <- clip(x0,
    -s, s) / s``), and eps is re-derived from it.  Gradients flow through the clip, so the
    backward-error indicator, the adaptive paths, calibration and every solver see the
    clipped model unchanged.
    """

    model: Any
    lo: float = struct.field(pytree_node=False, default=-1.0)
    hi: float = struct.field(pytree_node=False, default=1.0)
    dynamic_quantile: float | None = struct.field(pytree_node=False, default=None)

    def __call__(self, x, pt: Point) -> Prediction:
        alpha, sigma, _ = _coeffs(pt, x)
        x0 = self.model(x, pt).x0.astype(alpha.dtype)
        if self.dynamic_quantile is None:
            x0 = jnp.clip(x0, self.lo, self.hi)
        else:
            flat = jnp.abs(x0).reshape(x0.shape[0], -1)
            s = per_sample(jnp.maximum(jnp.quantile(flat, self.dynamic_quantile, axis=1), 1.0), x)
            x0 = jnp.clip(x0, -s, s) / s
        return Prediction(eps=eps_of_x0(x.astype(alpha.dtype), x0, alpha, sigma), x0=x0)


class ClassifierGuidance(_OnInternalForm, struct.PyTreeNode):
    """Classifier guidance (the reference's ``cond_fn``) on the internal form: ``eps <- eps -
    sigma_f * scale * g`` with ``g = cond_fn(x_f, t)`` the gradient of ``log p(y | x_f, t)``
    in the model's own scaling and time (the label closed over by ``cond_fn``)."""

    model: Any
    cond_fn: Any = None
    scale: float = 1.0

    def __call__(self, x, pt: Point) -> Prediction:
        cdt = compute_dtype(x.dtype)
        alpha, sigma, scale = _coeffs(pt, x)
        grad = Denoiser(net=self.cond_fn, process=self.process).raw(x, pt).astype(cdt)
        eps = self.model(x, pt).eps.astype(cdt) - sigma * scale * self.scale * grad
        return Prediction(eps=eps, x0=x0_of_eps(x.astype(cdt), eps, alpha, sigma))


class ClassifierFreeGuidance(struct.PyTreeNode):
    """Classifier-free guidance as a user-level model: ``out = (1 + w) out(x, t, y) - w
    out(x, t, null)``, valid for every prediction (the conversions are affine in it).

    ``model`` is conditional, ``model(x, t, y)`` with ``y`` int labels ``(B,)``; both
    branches run as ONE model call on the doubled batch.  A ``(B,)`` label array ties the
    wrapper to batches of exactly ``B`` samples: calibrate such a model with
    ``search_samples >= B`` and no ``chunk_size`` (a scalar label has no such limit).

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
        out = self.model(jnp.concatenate([x, x]), jnp.concatenate([t, t]), jnp.concatenate([y, null]))
        cond, uncond = out[:B], out[B:]
        return cond + self.scale * (cond - uncond)


def clip_denoised(model, noise_schedule: NoiseSchedule, lo: float = -1.0, hi: float = 1.0, dynamic_quantile: float | None = None) -> ClipDenoised:
    """Wraps ``model`` (any model :func:`as_denoiser` takes) with x0 clipping to ``[lo, hi]``
    or dynamic thresholding (see :class:`ClipDenoised`)."""
    if not lo < hi:
        raise ValueError(f"clip range must satisfy lo < hi, got [{lo}, {hi}]")
    if dynamic_quantile is not None and not 0.0 < dynamic_quantile <= 1.0:
        raise ValueError(f"dynamic_quantile must lie in (0, 1], got {dynamic_quantile}")
    return ClipDenoised(model=as_denoiser(model, noise_schedule), lo=float(lo), hi=float(hi), dynamic_quantile=dynamic_quantile)


def classifier_guidance(model, cond_fn, noise_schedule: NoiseSchedule, scale: float = 1.0) -> ClassifierGuidance:
    """Wraps ``model`` with classifier guidance (see :class:`ClassifierGuidance`)."""
    return ClassifierGuidance(model=as_denoiser(model, noise_schedule), cond_fn=prepare_model(cond_fn), scale=scale)
