"""Sampling on a fixed schedule: one ``lax.scan`` over the schedule's steps."""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._batch import check_noise, compute_dtype, nonfinite_rows, place_model, raise_nonfinite
from .models import X0_AT_PURE_NOISE, Prediction, as_denoiser
from .noise import NoiseSchedule, Point
from .schedule import Schedule, schedule_points
from .solvers import DEFAULT_SOLVER, Solver, StepTimes, get_solver

__all__ = ["rbe_sample", "step_times", "prepare_denoiser", "prepare_sampling"]


class _Carry(NamedTuple):
    x: jax.Array  # (B, ...) in the noise's dtype
    solver_state: Any
    bad_step: jax.Array  # (B,) int32 first step with a non-finite prediction or update; -1: none
    kept: jax.Array  # (n_kept, B, ...) states kept before chosen steps (n_kept may be 0)


def step_times(pts: Point) -> StepTimes:
    """The ``(m,)``-stacked :class:`StepTimes` of a schedule's ``(m + 1,)`` points."""
    m = pts.lam.shape[0] - 1
    return StepTimes(
        alpha=pts.alpha[:-1],
        sigma=pts.sigma[:-1],
        lam=pts.lam[:-1],
        alpha_next=pts.alpha[1:],
        sigma_next=pts.sigma[1:],
        lam_next=pts.lam[1:],
        remaining=jnp.arange(m - 1, -1, -1, dtype=jnp.int32),
    )


def _scan(model, noise: jax.Array, pts: Point, solver: Solver, slots: jax.Array | None = None, n_kept: int = 0, remat: bool = False) -> _Carry:
    """The sampler: ``model`` in the internal form, ``pts`` the schedule's points in the
    compute dtype.  With ``n_kept > 0`` the state before step ``i`` is kept in
    ``kept[slots[i]]`` (``slots[i] = -1``: not kept).  With ``remat``, each step is wrapped
    in ``jax.checkpoint``: a gradient through the scan then stores one carry per step and
    recomputes the step's activations, so its memory does not grow with the network's
    activations times NFE."""
    B = noise.shape[0]
    cdt = compute_dtype(noise.dtype)
    m = pts.lam.shape[0] - 1
    x = model.process.start(noise, pts.sigma[0])
    here = Point(*(v[:-1] for v in pts))
    slots = jnp.full((m,), -1, jnp.int32) if slots is None else slots

    def body(c: _Carry, inp):
        i, st, pt, slot = inp
        kept = c.kept
        if n_kept:
            at = jnp.maximum(slot, 0)
            kept = jax.lax.dynamic_update_index_in_dim(kept, jnp.where(slot >= 0, c.x, kept[at]), at, 0)
        pred = model(c.x, pt)
        x0 = pred.x0.astype(cdt)
        x_next, state = solver.step(c.solver_state, c.x.astype(cdt), Prediction(eps=pred.eps, x0=x0), st)
        bad = nonfinite_rows(x0) | nonfinite_rows(x_next)
        bad_step = jnp.where((c.bad_step < 0) & bad, i, c.bad_step)
        return _Carry(x_next.astype(noise.dtype), state, bad_step, kept), None

    if remat:
        body = jax.checkpoint(body)
    init = _Carry(x, solver.init(x.astype(cdt)), jnp.full((B,), -1, jnp.int32), jnp.zeros((n_kept, *noise.shape), noise.dtype))
    out, _ = jax.lax.scan(body, init, (jnp.arange(m, dtype=jnp.int32), step_times(pts), here, slots))
    return out


_scan_jit = jax.jit(_scan, static_argnames=("n_kept", "remat"))


def prepare_denoiser(model, noise, noise_schedule: NoiseSchedule, lam0):
    """The public edge of every entry point that samples: ``(model in the internal form,
    placed next to the noise; the checked noise)``; ``lam0`` is where sampling starts
    (checked when concrete: a pure-noise start needs a model that predicts x0 there).

    Raises:
      TypeError, ValueError: bad noise or model (one wrapped for another noise process, one
        that cannot start from pure noise).
    """
    noise = check_noise(noise)
    den = as_denoiser(model, noise_schedule)
    if not isinstance(lam0, jax.core.Tracer) and np.isneginf(float(lam0)) and den.prediction not in X0_AT_PURE_NOISE:
        raise ValueError(
            f"sampling starts at pure noise (alpha = 0), where a {den.prediction!r} model gives no "
            f"data prediction: use a model that predicts one of {X0_AT_PURE_NOISE} (as_model(..., prediction=...)) "
            "or a schedule (grid) that starts below pure noise"
        )
    return place_model(den, noise), noise


def prepare_sampling(model, noise, schedule: Schedule):
    """:func:`prepare_denoiser` for ``schedule``, and its points in the compute dtype."""
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be an rbe_jax.Schedule, got {type(schedule).__name__}")
    den, noise = prepare_denoiser(model, noise, schedule.noise_schedule, schedule.lam[0])
    return den, noise, schedule_points(schedule, compute_dtype(noise.dtype))


def rbe_sample(
    model,
    noise: jax.Array,
    schedule: Schedule,
    solver: str | Solver = DEFAULT_SOLVER,
    *,
    check_finite: bool = False,
) -> jax.Array:
    """Samples from noise on a fixed schedule with exactly ``schedule.nfe`` model evaluations.

    Inputs are validated on the host, then one module-level jitted ``lax.scan`` runs: an
    eager call compiles once per (noise shape and dtype, schedule length, solver, model
    structure), whatever the schedule's values and provenance.  ``jax.jit(rbe_sample)(model,
    noise, schedule, solver)`` works as well (the schedule's metadata is then part of the
    jit key, and its tables are computed inside the trace, in the compute dtype), and so does
    ``jax.grad`` with respect to the model's parameters or the schedule's times.

    The schedule's tables (alpha, sigma, half-log-SNR, the model's time) are computed in
    float64 on the host when its times are concrete and cast once to the compute dtype
    (float32, or wider when the noise is); the carried samples keep the noise's dtype
    (bfloat16 and float16 noise and models work).

    Args:
      model: the model: a :class:`rbe_jax.core.models.Denoiser` from :func:`rbe_jax.as_model`
        (any family and prediction), or any eps-prediction model ``model(x, t)`` of the
        schedule's noise process.  A pytree model is a traced argument; any other callable
        is closed over, one compilation per object.
      noise: ``(B, ...)`` standard-normal noise, scaled to the process's prior inside
        (``sigma_max z`` for VE and EDM, ``z`` for VP and flow models).  It may be sharded
        over a ``Mesh``; the output then has the same sharding, and a model whose arrays sit
        on other devices is replicated onto the batch's devices first.
      schedule: a :class:`Schedule` of the model's noise process.
      solver: a :class:`rbe_jax.Solver` (``rbe_jax.dpmpp2m()``) or its name; default
        :data:`rbe_jax.DEFAULT_SOLVER` (UniPC); ``"ddim"`` is the faithful RBE sampler of the
        paper.  Under ``jax.jit`` pass the object, since a string is not a JAX type.
      check_finite: after sampling, raise ``FloatingPointError`` naming the first sample,
        step and point where the model's prediction or a solver step was NaN/Inf.  It reads
        the result on the host, so it needs a concrete (not traced) call.
    Returns:
      ``(B, ...)`` clean samples (sigma = 0), in the noise's dtype.
    """
    solver = get_solver(solver)
    den, noise, pts = prepare_sampling(model, noise, schedule)
    if schedule.info.get("coefficients") and solver.name != "dpmpp2m_learned":
        warnings.warn(
            f"this schedule carries learned solver coefficients, which sampling with {solver.name!r} ignores "
            "(the schedule was tuned for them): pass R.learned_solver(schedule) as the solver",
            stacklevel=2,
        )
    out = _scan_jit(den, noise, pts, solver)
    if check_finite:
        if isinstance(out.bad_step, jax.core.Tracer) or isinstance(schedule.lam, jax.core.Tracer):
            raise ValueError("check_finite=True reads the result on the host: call rbe_sample outside jax.jit")
        bad = np.asarray(out.bad_step)
        raise_nonfinite("sampling", bad, lambda b: _where(schedule, int(bad[b])))
    return out.x


def _where(schedule: Schedule, step: int) -> str:
    """Where step ``step`` of ``schedule`` evaluates the model, for error messages."""
    lam = float(np.asarray(schedule.lam)[step])
    grid = "" if schedule.indices is None else f"grid index {int(schedule.indices[step])}, "
    return f"{grid}lambda {lam:.5g} (model time {schedule.model_times[step]:.6g})"
