"""Sampling on a fixed schedule: one ``lax.scan`` over the schedule's steps."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .adaptive import check_noise
from .models import check_model_output, ensure_model
from .schedule import Schedule
from .solvers import Solver, get_solver

__all__ = ["rbe_sample"]


def rbe_sample(model, noise: jax.Array, schedule: Schedule, solver: str | Solver = "ddim") -> jax.Array:
    """Samples from noise on a fixed schedule with exactly ``schedule.nfe`` model evaluations.

    ``jax.jit(rbe_sample)(model, noise, schedule)`` works as written when ``model`` is a
    pytree (an NNX module, :func:`rbe_jax.as_model`, a ``GaussianMixture``); it compiles once
    per schedule length and noise shape.  Under ``jax.jit`` pass the solver as an object
    (``rbe_jax.dpmpp2m()``), since a string is not a JAX type; outside jit a name works too.

    Args:
      model: ``model(x, t) -> eps``.
      noise: ``(B, ...)`` samples at the schedule's first point (for schedules that start at
        grid point ``K - 1``: standard normal noise).
      schedule: a :class:`Schedule` (RBE-calibrated or a baseline).
      solver: ``"ddim"``, ``"dpmpp2m"`` or a :class:`rbe_jax.solvers.Solver`.
    Returns:
      ``(B, ...)`` samples at clean data.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be an rbe_jax.Schedule, got {type(schedule).__name__}")
    solver = get_solver(solver)
    noise = check_noise(noise)
    model = ensure_model(model)
    check_model_output(model, noise)
    B = noise.shape[0]
    ab = jnp.asarray(schedule.alpha_bar, noise.dtype)
    ts = jnp.asarray(schedule.timesteps, jnp.int32)
    xs = (ts[:-1], ab[:-1], ab[1:])

    def body(carry, inp):
        x, state = carry
        t, a, a_next = inp
        eps = model(x, jnp.full((B,), t, jnp.int32))
        x, state = solver.step(state, x, eps, a, a_next)
        return (x, state), None

    (x, _), _ = jax.lax.scan(body, (noise, solver.init(noise)), xs)
    return x
