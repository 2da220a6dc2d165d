"""Solver steps for sampling on a fixed schedule.

A solver is a pair of pure functions, like optax's ``GradientTransformation``, made by a
factory that closes over its options:

- ``init(x) -> state``: the solver's carry (a small pytree: ``()`` or a ``NamedTuple``) for
  samples ``x`` ``(B, ...)``;
- ``step(state, x, eps, times) -> (x_next, state)``: one step along the schedule, given the
  model's ``eps`` at ``x`` and the step's :class:`StepTimes`.

The sampler hands every solver ``x`` and ``eps`` in its compute dtype (at least float32)
and the step's coefficients from the schedule's float64 tables (alpha, sigma, half-log-SNR
lambda; see :func:`rbe_jax.schedule.step_tables`), cast once.  A :class:`Solver` has no
array leaves, so it crosses ``jax.jit`` as an argument.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from flax import struct

from ._batch import per_sample

__all__ = [
    "Solver",
    "StepTimes",
    "SolverInit",
    "SolverStep",
    "DPMState",
    "ddim",
    "dpmpp2m",
    "get_solver",
    "ddim_update",
    "SOLVERS",
]


class StepTimes(NamedTuple):
    """The schedule's values for one step, from point ``i`` to point ``i + 1``.

    Scalars inside the sampler's scan (stacked ``(m,)`` arrays outside it).  At clean data
    ``alpha_next = 1``, ``sigma_next = 0`` and ``lam_next = +inf``.

    Attributes:
      t: int32 training timestep of the current point (the model's time input).
      alpha, sigma, lam: ``sqrt(abar)``, ``sqrt(1 - abar)``, ``log(alpha / sigma)`` now.
      alpha_next, sigma_next, lam_next: the same at the next point.
      remaining: int32 steps left after this one (``0`` on the last step).
    """

    t: jax.Array
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
    def __call__(self, state: Any, x: jax.Array, eps: jax.Array, times: StepTimes) -> tuple[jax.Array, Any]: ...


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
    adaptive RBE paths, where every sample has its own alpha-bar; sampling on a fixed
    schedule uses :func:`ddim` with the schedule's float64 tables.
    """
    a, a_next = per_sample(jnp.asarray(a, x.dtype), x), per_sample(jnp.asarray(a_next, x.dtype), x)
    return jnp.sqrt(a_next / a) * x + (jnp.sqrt(1.0 - a_next) - jnp.sqrt(a_next * (1.0 - a) / a)) * eps


def _x0(x, eps, times: StepTimes):
    """The data prediction ``x0 = (x - sigma eps) / alpha``."""
    return (x - times.sigma * eps) / times.alpha


def _first_order(x, x0, times: StepTimes):
    """The first-order step in data prediction, ``x' = (sigma'/sigma) x - alpha' expm1(-h) x0``
    with ``h = lam' - lam``: DDIM written with the schedule's tables (``x0`` at clean data)."""
    h = times.lam_next - times.lam
    return (times.sigma_next / times.sigma) * x - times.alpha_next * jnp.expm1(-h) * x0


@functools.cache
def ddim() -> Solver:
    """First-order deterministic DDIM (eta = 0).

    Factories are cached: equal options give the same :class:`Solver`, so jit does not
    recompile for a new call of the factory.
    """

    def init(x):
        return ()

    def step(state, x, eps, times: StepTimes):
        return _first_order(x, _x0(x, eps, times), times), state

    return Solver(name="ddim", init=init, step=step, order=1)


class DPMState(NamedTuple):
    """Carry of DPM-Solver++(2M): the previous x0 prediction and step in log-SNR."""

    x0_prev: jax.Array  # (B, ...)
    h_prev: jax.Array  # scalar
    has_prev: jax.Array  # bool scalar


@functools.cache
def dpmpp2m(lower_order_final: bool = False) -> Solver:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): second-order multistep in half-log-SNR,
    data prediction.

    First order on its first step (no previous x0 yet) and on the final step to clean data
    (``lambda = +inf`` there: the step returns the x0 prediction).

    Args:
      lower_order_final: also take the step before the final one at first order, as
        DPM-Solver suggests for fewer than 15 steps (more stable, less accurate on smooth
        problems).
    """

    def init(x):
        return DPMState(x0_prev=jnp.zeros_like(x), h_prev=jnp.ones((), x.dtype), has_prev=jnp.zeros((), bool))

    def step(state: DPMState, x, eps, times: StepTimes):
        x0 = _x0(x, eps, times)
        final = times.sigma_next <= 0.0
        h = times.lam_next - times.lam
        h_safe = jnp.where(final, 1.0, h)  # keeps the unused branch finite
        second = state.has_prev & ~final
        if lower_order_final:
            second = second & (times.remaining > 1)
        r = state.h_prev / h_safe
        d = jnp.where(second, x0 + (x0 - state.x0_prev) / (2.0 * r), x0)
        x_next = jnp.where(final, x0, _first_order(x, d, times))
        return x_next, DPMState(x0_prev=x0, h_prev=h_safe.astype(state.h_prev.dtype), has_prev=jnp.ones((), bool))

    return Solver(name="dpmpp2m", init=init, step=step, order=2)


SOLVERS: dict[str, Callable[[], Solver]] = {"ddim": ddim, "dpmpp2m": dpmpp2m}


def get_solver(solver) -> Solver:
    """A :class:`Solver` from itself or its name (``"ddim"``, ``"dpmpp2m"``; default options)."""
    if isinstance(solver, Solver):
        return solver
    if isinstance(solver, str) and solver in SOLVERS:
        return SOLVERS[solver]()
    raise ValueError(f"unknown solver {solver!r}; choose one of {sorted(SOLVERS)} or pass a Solver")
