"""Sampling on a fixed schedule: one ``lax.scan`` over the schedule's steps."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._batch import check_noise, compute_dtype, nonfinite_rows, place_model, raise_nonfinite
from .models import call_model, prepare_model
from .schedule import Schedule
from .solvers import Solver, StepTimes, get_solver

__all__ = ["rbe_sample", "schedule_step_times"]


class _Carry(NamedTuple):
    x: jax.Array  # (B, ...) in the noise's dtype
    solver_state: Any
    bad_step: jax.Array  # (B,) int32 first step with a non-finite eps or update; -1: none


def schedule_step_times(schedule: Schedule, dtype) -> StepTimes:
    """The ``(m,)``-stacked :class:`StepTimes` of a schedule, cast once to ``dtype``."""
    a, s, lam = (jnp.asarray(v, dtype) for v in (schedule.alpha, schedule.sigma, schedule.log_snr))
    m = np.shape(schedule.indices)[0] - 1
    return StepTimes(
        t=jnp.asarray(schedule.timesteps, jnp.int32)[:-1],
        alpha=a[:-1],
        sigma=s[:-1],
        lam=lam[:-1],
        alpha_next=a[1:],
        sigma_next=s[1:],
        lam_next=lam[1:],
        remaining=jnp.arange(m - 1, -1, -1, dtype=jnp.int32),
    )


def _scan(model, noise: jax.Array, times: StepTimes, solver: Solver) -> _Carry:
    B = noise.shape[0]
    cdt = compute_dtype(noise.dtype)

    def body(c: _Carry, inp):
        i, st = inp
        eps = call_model(model, c.x, jnp.full((B,), st.t, jnp.int32))
        x_next, state = solver.step(c.solver_state, c.x.astype(cdt), eps.astype(cdt), st)
        bad = nonfinite_rows(eps) | nonfinite_rows(x_next)
        bad_step = jnp.where((c.bad_step < 0) & bad, i, c.bad_step)
        return _Carry(x_next.astype(noise.dtype), state, bad_step), None

    init = _Carry(noise, solver.init(noise.astype(cdt)), jnp.full((B,), -1, jnp.int32))
    steps = jnp.arange(times.t.shape[0], dtype=jnp.int32)
    out, _ = jax.lax.scan(body, init, (steps, times))
    return out


_scan_jit = jax.jit(_scan)


def rbe_sample(
    model,
    noise: jax.Array,
    schedule: Schedule,
    solver: str | Solver = "ddim",
    *,
    check_finite: bool = False,
) -> jax.Array:
    """Samples from noise on a fixed schedule with exactly ``schedule.nfe`` model evaluations.

    Inputs are validated on the host, then one module-level jitted ``lax.scan`` runs: an
    eager call compiles once per (noise shape and dtype, schedule length, solver, model
    structure) and is then as fast as ``jax.jit(rbe_sample)``.  Both work as written:
    ``jax.jit(rbe_sample)(model, noise, schedule)``.

    The schedule's float64 tables (alpha, sigma, half-log-SNR) are cast once to the compute
    dtype (float32, or wider when the noise is); the carried samples keep the noise's dtype
    (bfloat16 and float16 noise and models work).

    Args:
      model: ``model(x, t) -> eps``: a pytree model (an NNX module, :func:`rbe_jax.as_model`)
        is a traced argument; any other callable (a plain or jitted function, a callable
        object) is closed over, one compilation per object.
      noise: ``(B, ...)`` samples at the schedule's first point (for schedules that start at
        grid point ``K - 1``: standard normal noise).  It may be sharded over a ``Mesh``; the
        output then has the same sharding, and a model whose arrays sit on other devices is
        replicated onto the batch's devices first.
      schedule: a :class:`Schedule` (RBE-calibrated or a baseline).
      solver: a :class:`rbe_jax.solvers.Solver` (``rbe_jax.dpmpp2m()``) or its name; under
        ``jax.jit`` pass the object, since a string is not a JAX type.
      check_finite: after sampling, raise ``FloatingPointError`` naming the first sample,
        step, grid index and timestep where eps or a solver step was NaN/Inf.  It reads the
        result on the host, so it needs a concrete (not traced) call.
    Returns:
      ``(B, ...)`` samples at clean data, in the noise's dtype.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be an rbe_jax.Schedule, got {type(schedule).__name__}")
    solver = get_solver(solver)
    noise = check_noise(noise)
    model = place_model(prepare_model(model), noise)
    times = schedule_step_times(schedule, compute_dtype(noise.dtype))
    out = _scan_jit(model, noise, times, solver)
    if check_finite:
        if isinstance(out.bad_step, jax.core.Tracer):
            raise ValueError("check_finite=True reads the result on the host: call rbe_sample outside jax.jit")
        bad = np.asarray(out.bad_step)
        at = np.maximum(bad, 0)
        raise_nonfinite("sampling", bad, np.asarray(schedule.indices)[at], np.asarray(schedule.timesteps)[at])
    return out.x
