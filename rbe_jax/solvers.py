"""Solver steps for sampling on a fixed schedule.

Each solver is a pair of pure functions, like optax's ``GradientTransformation``:

- ``init(x) -> state``: the solver's carry (a small pytree) for samples ``x`` ``(B, ...)``;
- ``step(state, x, eps, a, a_next) -> (x_next, state)``: one step from alpha-bar ``a`` to
  ``a_next`` (``a_next = 1`` is clean data) given the model's ``eps`` at ``(x, a)``.

``a`` and ``a_next`` are scalars: the schedule is shared by the whole batch
(:func:`ddim_update` also takes per-sample ``(B,)`` values, as the adaptive paths need).
A :class:`Solver` has no array leaves, so it can be passed through ``jax.jit`` as an
argument; the sampler scans any of them.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

__all__ = ["Solver", "ddim", "dpmpp2m", "get_solver", "ddim_update", "SOLVERS"]


class Solver(struct.PyTreeNode):
    """A solver as ``(init, step)`` pure functions; all fields static.

    Attributes:
      name: short name (``"ddim"``, ``"dpmpp2m"``).
      init: ``init(x) -> state``.
      step: ``step(state, x, eps, a, a_next) -> (x_next, state)``.
      order: the solver's order of convergence.
    """

    name: str = struct.field(pytree_node=False)
    init: Callable[[jax.Array], Any] = struct.field(pytree_node=False)
    step: Callable[..., tuple[jax.Array, Any]] = struct.field(pytree_node=False)
    order: int = struct.field(pytree_node=False, default=1)


def _like(v, x):
    """Scalar or ``(B,)`` alpha-bar, cast to x's dtype and shaped to broadcast over ``x``."""
    v = jnp.asarray(v, x.dtype)
    return v.reshape((-1,) + (1,) * (x.ndim - 1)) if v.ndim == 1 else v


def ddim_update(x: jax.Array, eps: jax.Array, a, a_next) -> jax.Array:
    """The deterministic DDIM step from alpha-bar ``a`` to ``a_next``.

    ``x' = sqrt(a'/a) x + (sqrt(1 - a') - sqrt(a' (1 - a) / a)) eps``; exact for the
    probability-flow ODE when eps is constant along the step.
    """
    a, a_next = _like(a, x), _like(a_next, x)
    return jnp.sqrt(a_next / a) * x + (jnp.sqrt(1.0 - a_next) - jnp.sqrt(a_next * (1.0 - a) / a)) * eps


def _ddim_init(x):
    return ()


def _ddim_step(state, x, eps, a, a_next):
    return ddim_update(x, eps, a, a_next), state


class DPMState(NamedTuple):
    """Carry of DPM-Solver++(2M): the previous x0 prediction and step in log-SNR."""

    x0_prev: jax.Array  # (B, ...)
    h_prev: jax.Array  # scalar or (B, 1, ...)
    has_prev: jax.Array  # bool, scalar


def _dpmpp2m_init(x):
    return DPMState(x0_prev=jnp.zeros_like(x), h_prev=jnp.ones((), x.dtype), has_prev=jnp.zeros((), bool))


def _half_log_snr(a):
    return 0.5 * (jnp.log(a) - jnp.log1p(-a))


def _dpmpp2m_step(state: DPMState, x, eps, a, a_next):
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) in data prediction; first order on its first
    step and on the final step to clean data (``a_next = 1``), where it returns x0."""
    a, a_next = _like(a, x), _like(a_next, x)
    sigma, alpha = jnp.sqrt(1.0 - a), jnp.sqrt(a)
    x0 = (x - sigma * eps) / alpha
    final = a_next >= 1.0
    a_next_safe = jnp.where(final, 0.5, a_next)  # keeps the unused branch finite
    h = _half_log_snr(a_next_safe) - _half_log_snr(a)
    r = state.h_prev / h
    d = jnp.where(state.has_prev, x0 + (x0 - state.x0_prev) / (2.0 * r), x0)
    x_next = jnp.sqrt(1.0 - a_next_safe) / sigma * x - jnp.sqrt(a_next_safe) * jnp.expm1(-h) * d
    x_next = jnp.where(final, x0, x_next)
    return x_next, DPMState(x0_prev=x0, h_prev=h.astype(x.dtype), has_prev=jnp.ones((), bool))


_DDIM = Solver(name="ddim", init=_ddim_init, step=_ddim_step, order=1)
_DPMPP2M = Solver(name="dpmpp2m", init=_dpmpp2m_init, step=_dpmpp2m_step, order=2)


def ddim() -> Solver:
    """First-order deterministic DDIM (eta = 0)."""
    return _DDIM


def dpmpp2m() -> Solver:
    """DPM-Solver++(2M): second-order multistep in half-log-SNR, data prediction."""
    return _DPMPP2M


SOLVERS = {"ddim": ddim, "dpmpp2m": dpmpp2m}


def get_solver(solver) -> Solver:
    """A :class:`Solver` from itself or its name (``"ddim"``, ``"dpmpp2m"``)."""
    if isinstance(solver, Solver):
        return solver
    if isinstance(solver, str) and solver in SOLVERS:
        return SOLVERS[solver]()
    raise ValueError(f"unknown solver {solver!r}; choose one of {sorted(SOLVERS)} or pass a Solver")
