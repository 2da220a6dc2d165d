"""Solver steps for sampling on a fixed schedule, in data prediction over half-log-SNR.

A solver is a pair of pure functions, like optax's ``GradientTransformation``, made by a
factory that closes over its options:

- ``init(x) -> state``: the solver's carry (a small pytree: ``()`` or a ``NamedTuple``) for
  samples ``x`` ``(B, ...)``;
- ``step(state, x, pred, times) -> (x_next, state)``: one step along the schedule, given the
  model's :class:`rbe_jax.core.models.Prediction` at ``x`` (its ``x0`` is used) and the step's
  :class:`StepTimes`.

Every family's probability-flow ODE is the same in the VP scaling and half-log-SNR
(``rbe_jax.noise``), so the solvers never see the family.  The first point may be pure noise
(``lam = -inf``: flow models, zero-terminal-SNR tables): the step out of it is DDIM's exact
limit ``x' = sigma' x + alpha' x0``, and a history point there carries no slope, so the
multistep corrections treat it as absent (finite values, finite gradients).

The sampler hands every solver ``x`` and ``x0`` in its compute dtype (at least float32) and
the step's coefficients cast once from the schedule's float64 tables.  A :class:`Solver` has
no array leaves, so it crosses ``jax.jit`` as an argument.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ._batch import per_sample
from .models import Prediction

__all__ = [
    "Solver",
    "StepTimes",
    "SolverInit",
    "SolverStep",
    "DPMState",
    "MultistepState",
    "ddim",
    "dpmpp2m",
    "dpmpp3m",
    "unipc",
    "get_solver",
    "DEFAULT_SOLVER",
    "ddim_update",
    "CoefficientState",
    "dpmpp2m_coefficients",
    "learned_solver",
    "SOLVERS",
]


class StepTimes(NamedTuple):
    """The schedule's values for one step, from point ``i`` to point ``i + 1`` (VP scaling).

    Scalars inside the sampler's scan (stacked ``(m,)`` arrays outside it), or per-sample
    ``(B, 1, ...)`` arrays in the adaptive loops.  At clean data ``alpha_next = 1``,
    ``sigma_next = 0`` and ``lam_next = +inf``; at pure noise ``alpha = 0``, ``sigma = 1`` and
    ``lam = -inf``.

    Attributes:
      alpha, sigma, lam: ``sqrt(sigmoid(2 lam))``, ``sqrt(sigmoid(-2 lam))`` and the
        half-log-SNR now.
      alpha_next, sigma_next, lam_next: the same at the next point.
      remaining: int32 steps left after this one (``0`` on the last step).
    """

    alpha: jax.Array
    sigma: jax.Array
    lam: jax.Array
    alpha_next: jax.Array
    sigma_next: jax.Array
    lam_next: jax.Array
    remaining: jax.Array


class SolverInit(Protocol):
    def __call__(self, x: jax.Array) -> Any: ...


class SolverStep(Protocol):
    def __call__(self, state: Any, x: jax.Array, pred: Prediction, times: StepTimes) -> tuple[jax.Array, Any]: ...


class Solver(struct.PyTreeNode):
    """A solver as ``(init, step)`` pure functions; all fields static.

    Attributes:
      name: short name (``"ddim"``, ``"dpmpp2m"``), recorded in sampling-job manifests.
      init: :class:`SolverInit`.
      step: :class:`SolverStep`.
      order: the order of convergence in the step size, checked by the test suite on
        closed-form Gaussian data.
    """

    name: str = struct.field(pytree_node=False)
    init: SolverInit = struct.field(pytree_node=False)
    step: SolverStep = struct.field(pytree_node=False)
    order: int = struct.field(pytree_node=False, default=1)


def ddim_update(x: jax.Array, eps: jax.Array, a, a_next) -> jax.Array:
    """The deterministic DDIM step from alpha-bar ``a`` to ``a_next`` (scalars or ``(B,)``).

    ``x' = sqrt(a'/a) x + (sqrt(1 - a') - sqrt(a' (1 - a) / a)) eps``; exact for the
    probability-flow ODE when eps is constant along the step.  This is the update of the
    faithful adaptive RBE paths, where every sample has its own alpha-bar; sampling on a
    fixed schedule uses :func:`ddim` (data prediction, the same step).
    """
    a, a_next = per_sample(jnp.asarray(a, x.dtype), x), per_sample(jnp.asarray(a_next, x.dtype), x)
    return jnp.sqrt(a_next / a) * x + (jnp.sqrt(1.0 - a_next) - jnp.sqrt(a_next * (1.0 - a) / a)) * eps


def _first_order(x, x0, times: StepTimes):
    """The first-order step in data prediction, ``x' = (sigma'/sigma) x - alpha' expm1(-h) x0``
    with ``h = lam' - lam``: DDIM written with the schedule's tables (``x0`` at clean data,
    ``sigma' x + alpha' x0`` from pure noise)."""
    h = times.lam_next - times.lam
    return (times.sigma_next / times.sigma) * x - times.alpha_next * jnp.expm1(-h) * x0


def _final(times: StepTimes):
    return times.sigma_next <= 0.0


def _safe_div(a, b):
    """``a / b`` with 0 where ``b == 0`` (unused branches of a jnp.where stay finite)."""
    return a / jnp.where(b == 0, 1.0, b)


@functools.cache
def ddim() -> Solver:
    """First-order deterministic DDIM (eta = 0).

    Factories are cached: equal options give the same :class:`Solver`, so jit does not
    recompile for a new call of the factory.
    """

    def init(x):
        return ()

    def step(state, x, pred: Prediction, times: StepTimes):
        return jnp.where(_final(times), pred.x0, _first_order(x, pred.x0, times)), state

    return Solver(name="ddim", init=init, step=step, order=1)


class DPMState(NamedTuple):
    """Carry of DPM-Solver++(2M): the previous x0 prediction and step in log-SNR."""

    x0_prev: jax.Array  # (B, ...)
    h_prev: jax.Array  # scalar (or per sample); +inf after a step out of pure noise
    has_prev: jax.Array  # bool


@functools.cache
def dpmpp2m(lower_order_final: bool = False) -> Solver:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): second-order multistep in half-log-SNR,
    data prediction.

    First order on its first step (no previous x0 yet), after a step out of pure noise, and
    on the final step to clean data (``lambda = +inf`` there: the step returns the x0
    prediction).

    Args:
      lower_order_final: DPM-Solver's rule for few steps, order at most the number of steps
        left (this one included).  For an order-2 method it only touches the final step,
        which is first order anyway, so the samples are the same either way; the option is
        here so that every multistep solver takes it.
    """

    def init(x):
        return DPMState(x0_prev=jnp.zeros_like(x), h_prev=jnp.ones((), x.dtype), has_prev=jnp.zeros((), bool))

    def step(state: DPMState, x, pred: Prediction, times: StepTimes):
        x0 = pred.x0
        final = _final(times)
        h = times.lam_next - times.lam
        slope = state.has_prev & jnp.isfinite(state.h_prev) & ~final  # lower_order_final: nothing more to lower
        h_safe = jnp.where(final | ~jnp.isfinite(h), 1.0, h)  # keeps the unused branches finite
        r = jnp.where(slope, state.h_prev, 1.0) / h_safe
        d = jnp.where(slope, x0 + (x0 - state.x0_prev) / (2.0 * r), x0)
        x_next = jnp.where(final, x0, _first_order(x, d, times))
        return x_next, DPMState(x0_prev=x0, h_prev=jnp.asarray(h, state.h_prev.dtype), has_prev=jnp.ones_like(state.has_prev))

    return Solver(name="dpmpp2m", init=init, step=step, order=2)


class CoefficientState(NamedTuple):
    """Carry of :func:`dpmpp2m_coefficients`: the last two x0 predictions, the last step in
    log-SNR, how many of the last points had a finite log-SNR (0-2) and the step index."""

    x0_prev: jax.Array  # (B, ...)
    x0_prev2: jax.Array  # (B, ...)
    h_prev: jax.Array  # scalar
    n_prev: jax.Array  # int32
    i: jax.Array  # int32


def dpmpp2m_coefficients(c, e) -> Solver:
    """DPM-Solver++(2M) with one learned coefficient per step on each of its two history
    differences (the idea of S4S, Frankel et al. 2025): step ``i`` moves with

    ``D_i = x0_i + (1 / (2 r_i) + c_i) (x0_i - x0_{i-1}) + e_i (x0_{i-1} - x0_{i-2})``

    (``r_i = h_{i-1} / h_i``; ``1 / (2 r)`` is taken as 0 on the final step, which 2M takes
    first order) in place of 2M's x0, and the final step to clean data returns ``D``.  At
    ``c = e = 0`` it is :func:`dpmpp2m` exactly.  History points at pure noise carry no
    difference, as in 2M.  Learned by :func:`rbe_jax.learn_schedule` with
    ``coefficients=True`` and stored with the schedule (:func:`learned_solver` rebuilds it).

    Args:
      c, e: ``(m,)`` coefficients, one per step of the schedule they were learned with
        (``c[0]``, ``e[0]`` and ``e[1]`` are unused: there is no history yet).  Arrays (traced
        ones too, inside a learning step) or sequences.
    Returns:
      A :class:`Solver` named ``"dpmpp2m_learned"``.  Each call makes a new solver (a new
      jit cache entry): build it once per schedule.
    """
    c = jnp.asarray(c, jnp.float32) if not isinstance(c, jax.Array) else c
    e = jnp.asarray(e, jnp.float32) if not isinstance(e, jax.Array) else e
    if c.ndim != 1 or e.shape != c.shape:
        raise ValueError(f"c and e must be two (m,) arrays of the same length, got shapes {c.shape} and {e.shape}")

    def init(x):
        z = jnp.zeros_like(x)
        return CoefficientState(z, z, jnp.ones((), x.dtype), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

    def step(state: CoefficientState, x, pred: Prediction, times: StepTimes):
        x0 = pred.x0
        final = _final(times)
        h = times.lam_next - times.lam
        ci, ei = c[state.i].astype(x.dtype), e[state.i].astype(x.dtype)
        one = state.n_prev >= 1
        h_safe = jnp.where(final | ~jnp.isfinite(h), 1.0, h)
        c2m = jnp.where(one & ~final, h_safe / (2.0 * jnp.where(one, state.h_prev, 1.0)), 0.0)
        d = x0 + jnp.where(one, (c2m + ci) * (x0 - state.x0_prev), 0.0)
        d = d + jnp.where(state.n_prev >= 2, ei * (state.x0_prev - state.x0_prev2), 0.0)
        x_next = jnp.where(final, d, _first_order(x, d, times))
        n_next = jnp.where(jnp.isfinite(times.lam), jnp.minimum(state.n_prev + 1, 2), 0)
        h_next = jnp.asarray(jnp.where(jnp.isfinite(h), h, 1.0), state.h_prev.dtype)
        return x_next, CoefficientState(x0, state.x0_prev, h_next, n_next.astype(jnp.int32), state.i + 1)

    return Solver(name="dpmpp2m_learned", init=init, step=step, order=2)


def learned_solver(schedule) -> Solver:
    """The :func:`dpmpp2m_coefficients` solver stored with a schedule learned with
    ``coefficients=True`` (``schedule.info["coefficients"]``).

    Raises:
      ValueError: the schedule carries no coefficients, or not one per step.
    """
    co = schedule.info.get("coefficients")
    if not co:
        raise ValueError(f"this {schedule.method} schedule carries no learned solver coefficients (learn_schedule(..., coefficients=True) makes them)")
    c, e = (np.asarray(co[k], np.float32) for k in ("c", "e"))
    if c.shape != (schedule.nfe,) or e.shape != (schedule.nfe,):
        raise ValueError(f"the schedule's coefficients have shapes {c.shape} and {e.shape}, not ({schedule.nfe},): the file is damaged")
    return dpmpp2m_coefficients(c, e)


class MultistepState(NamedTuple):
    """Carry of the multistep solvers (DPM-Solver++(3M), UniPC): the last x0 predictions and
    half-log-SNR values, newest first, and the previous point's sample and step order."""

    x0s: jax.Array  # (2, B, ...): x0 at the previous point and the one before
    lams: jax.Array  # (2,): lambda at those points
    x_prev: jax.Array  # (B, ...) the previous sample (UniPC's corrector restarts from it)
    sigma_prev: jax.Array  # sigma at the previous point
    order_prev: jax.Array  # int32: the order of the previous step
    done: jax.Array  # int32: steps taken so far


def _multistep_init(x):
    return MultistepState(
        x0s=jnp.zeros((2, *x.shape), x.dtype),
        lams=jnp.zeros((2,), x.dtype),
        x_prev=jnp.zeros_like(x),
        sigma_prev=jnp.ones((), x.dtype),
        order_prev=jnp.zeros((), jnp.int32),
        done=jnp.zeros((), jnp.int32),
    )


def _push(state: MultistepState, x0, x, times: StepTimes, order) -> MultistepState:
    """The state after a step from the point ``times`` describes, where the sample was ``x``
    and the model's x0 prediction ``x0``."""
    return MultistepState(
        x0s=jnp.stack([x0, state.x0s[0]]),
        lams=jnp.stack([jnp.asarray(times.lam, state.lams.dtype), state.lams[0]]),
        x_prev=x,
        sigma_prev=jnp.asarray(times.sigma, state.sigma_prev.dtype),
        order_prev=jnp.asarray(order, jnp.int32),
        done=state.done + 1,
    )


def _history(state: MultistepState, lam):
    """``(n, l1, l2)``: how many history points carry a slope (taken, at finite lambda) and
    their lambdas, the missing ones replaced by finite stand-ins below ``lam`` (so that the
    branches that do not use them stay finite, in value and in gradient)."""
    ok1 = (state.done >= 1) & jnp.isfinite(state.lams[0])
    ok2 = (state.done >= 2) & jnp.isfinite(state.lams[1]) & ok1
    l1 = jnp.where(ok1, state.lams[0], lam - 1.0)
    l2 = jnp.where(ok2, state.lams[1], l1 - 1.0)
    return ok1.astype(jnp.int32) + ok2.astype(jnp.int32), l1, l2


def _step_order(order: int, history: jax.Array, times: StepTimes, lower_order_final: bool) -> jax.Array:
    """The order of a multistep method on this step: at most ``history + 1`` (the points with
    a slope), 1 on the final step to clean data (``lambda = +inf``: the step returns x0), and
    with ``lower_order_final`` at most the number of steps left, this one included
    (DPM-Solver's rule, as in its reference code and in diffusers)."""
    k = jnp.minimum(order, history + 1)
    if lower_order_final:
        k = jnp.minimum(k, times.remaining + 1)
    return jnp.where(_final(times), 1, k)


@functools.cache
def dpmpp3m(lower_order_final: bool = False) -> Solver:
    """DPM-Solver++(3M) (Lu et al. 2022): third-order multistep in half-log-SNR, data
    prediction.  Orders ramp up 1, 2, 3 as history accumulates; the final step to clean data
    is first order (it returns x0).

    Args:
      lower_order_final: cap the order by the steps left, this one included (order 2 on
        the step before the final one), as DPM-Solver suggests for fewer than 15 steps.
    """

    def step(state: MultistepState, x, pred: Prediction, times: StepTimes):
        x0 = pred.x0
        lam0 = jnp.where(jnp.isfinite(times.lam), times.lam, 0.0)
        n, lam1, lam2 = _history(state, lam0)
        k = _step_order(3, n, times, lower_order_final)
        m0, m1, m2 = x0, state.x0s[0], state.x0s[1]
        h = jnp.where(k > 1, times.lam_next - lam0, 1.0)  # finite in the unused branches
        em1 = jnp.expm1(-h)
        r0, r1 = _safe_div(lam0 - lam1, h), _safe_div(lam1 - lam2, h)
        d1_0, d1_1 = _safe_div(m0 - m1, r0), _safe_div(m1 - m2, r1)
        d1 = d1_0 + _safe_div(r0, r0 + r1) * (d1_0 - d1_1)
        d2 = _safe_div(d1_0 - d1_1, r0 + r1)
        base = (times.sigma_next / times.sigma) * x - times.alpha_next * em1 * m0
        second = base - 0.5 * times.alpha_next * em1 * d1_0
        third = base + times.alpha_next * (em1 / h + 1.0) * d1 - times.alpha_next * ((em1 + h) / h**2 - 0.5) * d2
        first = jnp.where(_final(times), x0, _first_order(x, x0, times))
        x_next = jnp.where(k >= 3, third, jnp.where(k == 2, second, first))
        return x_next, _push(state, x0, x, times, k)

    return Solver(name="dpmpp3m", init=_multistep_init, step=step, order=3)


def _unipc_rhos_order2(r, b1, b2):
    """Solves ``[[1, 1], [r, 1]] rho = [b1, b2]`` (UniPC's order-2 coefficients)."""
    rho0 = _safe_div(b1 - b2, 1.0 - r)
    return rho0, b1 - rho0


def _unipc_kernel(h):
    """``(em1, b1, b2)`` of UniPC's B(h) = expm1(-h) ("bh2") variant for a step ``h`` in
    half-log-SNR, with their limits ``(-1, 1, 1)`` for a step out of pure noise (``h =
    +inf``; diffusers' flow-matching UniPC takes the same limits)."""
    ok = jnp.isfinite(h)
    hh = -jnp.where(ok, h, 1.0)
    em1 = jnp.expm1(hh)
    phi = em1 / hh - 1.0
    b1 = phi / em1
    b2 = (phi / hh - 0.5) * 2.0 / em1
    return jnp.where(ok, em1, -1.0), jnp.where(ok, b1, 1.0), jnp.where(ok, b2, 1.0)


@functools.cache
def unipc(lower_order_final: bool = False, corrector: bool = True) -> Solver:
    """UniPC (Zhao et al. 2023), the B(h) = expm1(-h) variant ("bh2"), data prediction:
    an order-2 multistep predictor (UniP) and the UniC corrector, which corrects each new
    point with the model evaluation that the next step makes there anyway, so the NFE are
    unchanged and the order rises by one.

    Orders ramp up 1, 2 as history accumulates; the final step to clean data is first
    order (it returns x0) and is not corrected (no evaluation is made at clean data).

    Args:
      lower_order_final: cap the order by the steps left, this one included; for this
        order-2 method that touches only the final step, first order anyway, so the samples
        are the same either way.
      corrector: apply UniC (``False`` gives the plain UniP-2 predictor).
    """

    def step(state: MultistepState, x, pred: Prediction, times: StepTimes):
        x0 = pred.x0  # at the predicted (uncorrected) point: kept in the history
        lam = times.lam
        lam_now = jnp.where(jnp.isfinite(lam), lam, 0.0)  # a finite stand-in at pure noise
        m0, m1 = state.x0s[0], state.x0s[1]
        if corrector:  # UniC: correct x from the previous point, with the new x0
            # stand-ins below lam_now, never lam: at pure noise -inf - (-inf) would make the
            # unused order-2 branch NaN, and its zero cotangent times NaN a NaN gradient
            _, l1, l2 = _history(state, lam_now)
            h = jnp.where(state.done > 0, lam - state.lams[0], 1.0)  # +inf after a step out of pure noise
            em1, b1, b2 = _unipc_kernel(h)
            h = jnp.where(jnp.isfinite(h), h, 1.0)
            base = (times.sigma / state.sigma_prev) * state.x_prev - times.alpha * em1 * m0
            d1_t = x0 - m0
            one = base - times.alpha * em1 * 0.5 * d1_t
            r = _safe_div(l2 - l1, h)
            rho0, rho1 = _unipc_rhos_order2(r, b1, b2)
            two = base - times.alpha * em1 * (rho0 * _safe_div(m1 - m0, r) + rho1 * d1_t)
            corrected = jnp.where(state.order_prev >= 2, two, one)
            x = jnp.where(state.done > 0, corrected, x)
        n, l1, _ = _history(state, lam_now)
        k = _step_order(2, n, times, lower_order_final)
        h = jnp.where(k > 1, times.lam_next - lam_now, 1.0)
        em1 = jnp.expm1(-h)
        r = _safe_div(l1 - lam_now, h)
        base = (times.sigma_next / times.sigma) * x - times.alpha_next * em1 * x0
        second = base - times.alpha_next * em1 * 0.5 * _safe_div(m0 - x0, r)
        first = jnp.where(_final(times), x0, _first_order(x, x0, times))
        x_next = jnp.where(k >= 2, second, first)
        return x_next, _push(state, x0, x, times, k)

    return Solver(name="unipc", init=_multistep_init, step=step, order=3 if corrector else 2)


SOLVERS: dict[str, Callable[[], Solver]] = {"ddim": ddim, "dpmpp2m": dpmpp2m, "dpmpp3m": dpmpp3m, "unipc": unipc}
# The one default of every entry point that takes a solver (rbe_sample, sample_job, the
# tuners, pretrained_schedule, the CLI): UniPC, the most accurate at 5-20 steps in every
# benchmark here.  The faithful RBE sampler of the paper is one argument away: solver="ddim".
DEFAULT_SOLVER = "unipc"


def get_solver(solver) -> Solver:
    """A :class:`Solver` from itself or its name (``"ddim"``, ``"dpmpp2m"``; default options)."""
    if isinstance(solver, Solver):
        return solver
    if isinstance(solver, str) and solver in SOLVERS:
        return SOLVERS[solver]()
    raise ValueError(f"unknown solver {solver!r}; choose one of {sorted(SOLVERS)} or pass a Solver")
