"""A cheap probe that notices a mislabelled prediction: :func:`check_model`.

Declaring a velocity model as eps, or forgetting a score model's ``-sigma`` factor, is
silent: the sampler runs to the end and returns garbage.  At a very noisy point (half-log-SNR
``-3``: ``alpha_vp`` about 0.05) the true denoiser ``x0 = E[x0 | x]`` barely depends on the
input (the posterior is close to the prior) and stays on the data's scale.  Read with the
wrong label, the same output gives an x0 that follows the input noise, or is amplified by
``1 / alpha`` (about 20).  One model evaluation on a few noise samples, read as every
prediction, tells most labels apart; a short DDIM run under each label (8 steps, the x0
predictions must stay on the data's scale) catches the rest of the gross ones (a flow
model's velocity read as eps on zero-mean data, whose error grows along the way).  Labels
that agree at every noise level (EDM's velocity ``d x / d sigma`` is eps) are equivalent.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._batch import check_noise, compute_dtype
from .models import PREDICTIONS, as_denoiser
from .noise import NoiseSchedule, Point

__all__ = ["ModelCheck", "PredictionMismatch", "check_model"]

PROBE_LAMBDA = -3.0  # the probe's noise level (clipped to the process's range)
MAX_DEPENDENCE = 0.35  # a plausible x0 varies with the input noise by at most this much of it
MAX_RMS = 5.0  # ... and stays within this RMS (data on the scale of a few units)
RUN_STEPS = 8  # the short DDIM run under each reading


class PredictionMismatch(ValueError):
    """A model's outputs are implausible for its declared prediction and plausible for another."""


class ModelCheck(NamedTuple):
    """What :func:`check_model` measured.

    Attributes:
      declared: the model's declared prediction.
      trajectory_rms: ``{prediction: r}``: the largest RMS of the x0 predictions along an
        8-step DDIM run from noise under that reading (the data's scale for the true one).
      dependence: ``{prediction: d}``: how much the implied x0 follows the input noise at the
        probe point (std over samples, relative to the input's); about ``alpha * Var(x0)``
        for the true label.
      rms: ``{prediction: r}``: the implied x0's RMS there.
      likely: the most plausible prediction (lowest dependence among the plausible ones), or
        ``None`` when none is plausible (an untrained network, say).
    """

    declared: str
    dependence: dict
    rms: dict
    trajectory_rms: dict
    likely: str | None

    def plausible(self, label: str) -> bool:
        return self.dependence[label] <= MAX_DEPENDENCE and max(self.rms[label], self.trajectory_rms[label]) <= MAX_RMS

    @property
    def mismatch(self) -> bool:
        """The declared prediction is implausible and another one plausible."""
        return not self.plausible(self.declared) and self.likely is not None

    @property
    def alternatives(self) -> list[str]:
        """The plausible predictions, most plausible (least noise-following) first."""
        return sorted((label for label in self.dependence if self.plausible(label)), key=lambda label: self.dependence[label])

    def message(self) -> str:
        d = self.declared
        alts = self.alternatives
        seen = ", ".join(f"{a!r} (dependence {self.dependence[a]:.2g}, RMS at most {max(self.rms[a], self.trajectory_rms[a]):.3g})" for a in alts)
        wrap = " or ".join(f"prediction={a!r}" for a in alts)
        return (
            f"the model's outputs do not look like {d!r} predictions: read as {d!r}, its x0 at a very noisy "
            f"point follows the input noise by {self.dependence[d]:.2g} (a denoiser's: below {MAX_DEPENDENCE}) with RMS "
            f"{self.rms[d]:.3g}, and reaches RMS {self.trajectory_rms[d]:.3g} along a short run (plausible: below {MAX_RMS}); "
            f"plausible readings: {seen}. Wrap it with as_model(..., {wrap}, noise_schedule=...)"
        )


def _innermost(model):
    while not hasattr(model, "raw"):
        model = model.model
    return model


def _rms(v, axis=None):
    return jnp.sqrt(jnp.mean(jnp.square(v), axis=axis))


def _probe(den, z: jax.Array, run: Point, labels: tuple[str, ...]):
    """DDIM over ``run`` (``(S + 1,)`` points, the last clean data) from ``z`` under every
    reading of the model's output at once (one model call per step on the stacked batch):
    ``(dependence, rms)`` of the implied x0 at the first point and the largest x0 RMS along
    the run, each ``(len(labels),)``."""
    L, n = len(labels), z.shape[0]
    cdt = run.alpha.dtype
    readings = [den.replace(prediction=label) for label in labels]
    x = jnp.broadcast_to((z.astype(cdt) * run.sigma[0]).astype(z.dtype), (L, *z.shape))

    def step(x, i):
        pt = Point(*(v[i] for v in run))
        raw = den.raw(x.reshape(L * n, *z.shape[1:]), pt).reshape(x.shape)
        preds = [r.convert(raw[k], x[k], pt) for k, r in enumerate(readings)]
        x0 = jnp.stack([p.x0.astype(cdt) for p in preds])
        eps = jnp.stack([p.eps.astype(cdt) for p in preds])
        x_next = (run.alpha[i + 1] * x0 + run.sigma[i + 1] * eps).astype(x.dtype)
        flat = x0.reshape(L, n, -1)
        return x_next, (_rms(flat, (1, 2)), jnp.sqrt(jnp.mean(jnp.var(flat, axis=1), axis=-1)))

    _, (rms, spread) = jax.lax.scan(step, x, jnp.arange(run.lam.shape[0] - 1))
    spread_in = run.sigma[0] * jnp.sqrt(jnp.mean(jnp.var(z.astype(cdt).reshape(n, -1), axis=0)))
    worst = jnp.max(jnp.where(jnp.isfinite(rms), rms, jnp.inf), axis=0)
    return spread[0] / spread_in, rms[0], worst


_probe_jit = jax.jit(_probe, static_argnames=("labels",))


def check_model(model, noise_schedule: NoiseSchedule, noise, *, samples: int = 16, strict: bool = True) -> ModelCheck:
    """Reads the model's output as every prediction, at a very noisy point and along a short
    DDIM run (one batched model call per step, 8 steps).  Run it once after wrapping a new
    model: it names a gross mislabel (x0 that follows the noise, or grows beyond a few units)
    and the prediction that fits.  It cannot tell readings that look alike at every noise
    level it sees: x0 from v on small data, eps from a flow velocity on data of scale well
    below 1, and an untrained network from an x0 model predicting the mean.

    Args:
      model: the model as the samplers take it (:func:`rbe_jax.as_model`'s result, or a bare
        eps model of ``noise_schedule``'s process).
      noise_schedule: the model's noise schedule.
      noise: ``(B, ...)`` standard-normal noise of the model's sample shape (the first
        ``samples`` are used; at least 2).
      strict: raise :class:`PredictionMismatch` on a mismatch (else only report it).
    Returns:
      :class:`ModelCheck` (``.mismatch`` says whether the declared prediction looks wrong;
      ``.message()`` says why and which one fits).
    Raises:
      PredictionMismatch: with ``strict``, the declared prediction is implausible and
        another one plausible.
    """
    noise = check_noise(noise)
    den = _innermost(as_denoiser(model, noise_schedule))
    n = min(int(samples), noise.shape[0])
    if n < 2:
        raise ValueError("check_model needs at least 2 noise samples")
    lo, hi = noise_schedule.lam_range
    lam = float(np.clip(PROBE_LAMBDA, lo if math.isfinite(lo) else -np.inf, hi))
    labels = tuple(p for p in PREDICTIONS if p != "velocity" or den.process.has_velocity)
    cdt = compute_dtype(noise.dtype)
    run_lam = np.append(np.linspace(lam, min(4.0, hi), RUN_STEPS), np.inf)
    run = Point(*(jnp.asarray(v, cdt) for v in noise_schedule.points(run_lam)))
    res = jax.device_get(_probe_jit(den, noise[:n], run, labels))
    dep, rms, traj = ({label: float(v) for label, v in zip(labels, r)} for r in res)
    c = ModelCheck(declared=den.prediction, dependence=dep, rms=rms, trajectory_rms=traj, likely=None)
    alts = c.alternatives
    c = c._replace(likely=alts[0] if alts else None)
    if strict and c.mismatch:
        raise PredictionMismatch(c.message())
    return c
