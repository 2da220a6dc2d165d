"""A probe that notices a mislabelled prediction: :func:`check_model`.

Declaring a velocity model as eps, or forgetting a score model's ``-sigma`` factor, is
silent: the sampler runs to the end and returns garbage.  The probe reads the model's output
as every prediction and asks of each reading whether it behaves as a denoiser of the samples
it generates itself:

1. sample a few points from noise under the reading (a 24-step DDIM run, one batched model
   call per step for all readings together);
2. noise those samples again at a few levels (half-log-SNR -1 to 2) and denoise them under the
   same reading;
3. compare its error with that of the best linear shrinkage of the same samples (mean and
   variance estimated leave-one-out): ``x0 = mu + alpha s^2 / (alpha^2 s^2 + sigma^2) (x -
   alpha mu)``.

A true denoiser is the posterior mean, which no other estimator beats, the linear one
included: its ratio stays at or below 1 at every level (:data:`MAX_RATIO` allows for a
trained network's error), and clearly below 1 at some level where the data have structure
(:data:`INFORMATIVE`).  A wrong reading denoises its own samples worse than a linear
shrinkage at some level (usually by orders of magnitude), or, in the rare readings that are
consistent, looks like a denoiser of Gaussian data (an x0 model read as v on small data:
``x0 = alpha x``), which a model trained on data with structure is not.  The probe is
scale-free: it assumes nothing about the data's range.  What it cannot tell apart is said in
:attr:`ModelCheck.ambiguous` (and warned about): plausible readings that sample differently.
Readings that agree at every noise level (EDM's velocity ``d x / d sigma`` is eps) sample
alike and are equivalent.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._batch import check_noise, compute_dtype
from .models import PREDICTIONS, as_denoiser, model_noise_schedule
from .noise import NoiseSchedule, Point

__all__ = ["ModelCheck", "PredictionMismatch", "check_model"]

RUN_FROM, RUN_TO = -5.0, 6.0  # the sampling run's first and last finite half-log-SNR (clipped to the process)
RUN_STEPS = 24  # DDIM steps of the run under each reading
LEVELS = (-1.0, 0.0, 1.0, 2.0)  # where the samples are noised again and denoised
MAX_RATIO = 1.1  # consistent: at no level worse than this multiple of the linear shrinkage's error
INFORMATIVE = 0.9  # informative: at some level better than this multiple (a model of Gaussian data is not)
SAME_SAMPLES = 0.1  # two readings sample alike when their samples differ by at most this RMS fraction
MIN_VALUES = 2048  # the denoising test uses at least this many values (noise redrawn up to 8 times)
PROBE_SEED = 20260  # the key of the redrawn noise (the probe is deterministic)


class PredictionMismatch(ValueError):
    """A model's outputs do not fit its declared prediction: another reading fits, or none
    does."""


class ModelCheck(NamedTuple):
    """What :func:`check_model` measured.

    Attributes:
      declared: the model's declared prediction.
      levels: the half-log-SNR levels of the denoising test.
      ratios: ``{prediction: (r_1, ...)}``: at each level, the mean squared error of the
        reading's x0 on its own samples noised again, over that of the best linear shrinkage
        of those samples (``<= 1`` for a true denoiser; ``inf`` where the samples collapsed
        or went non-finite).
      spread: ``{prediction: s}``: the RMS of the reading's samples.
      distance: ``{prediction: d}``: the RMS difference of the reading's samples from the
        declared reading's (same noise), relative to the declared samples' RMS.
      likely: the declared prediction when it is plausible, else the plausible reading with
        the lowest mean ratio, or ``None`` when no reading is plausible.
    """

    declared: str
    levels: tuple
    ratios: dict
    spread: dict
    distance: dict
    likely: str | None

    def consistent(self, label: str) -> bool:
        """Whether reading ``label`` denoises its own samples at least about as well as a
        linear shrinkage at every level."""
        r = self.ratios[label]
        return all(math.isfinite(v) for v in r) and max(r) <= MAX_RATIO

    def informative(self, label: str) -> bool:
        """Whether reading ``label`` beats the linear shrinkage clearly at some level (its
        samples have structure that it explains; a reading that looks like a denoiser of
        Gaussian data does not)."""
        return min(self.ratios[label]) <= INFORMATIVE

    def plausible(self, label: str) -> bool:
        """Consistent, and informative unless no consistent reading is."""
        if not self.consistent(label):
            return False
        return self.informative(label) or not any(self.consistent(a) and self.informative(a) for a in self.ratios)

    def score(self, label: str) -> float:
        """The mean ratio of reading ``label``."""
        return float(np.mean(self.ratios[label]))

    @property
    def alternatives(self) -> list[str]:
        """The plausible readings, lowest mean ratio first."""
        return sorted((label for label in self.ratios if self.plausible(label)), key=self.score)

    @property
    def ambiguous(self) -> list[str]:
        """Plausible readings that sample differently from the declared (plausible) one: the
        probe cannot tell them from it."""
        if not self.plausible(self.declared):
            return []
        return [a for a in self.alternatives if not self.distance[a] <= SAME_SAMPLES]

    @property
    def mismatch(self) -> bool:
        """The declared prediction is implausible and another one plausible."""
        return not self.plausible(self.declared) and bool(self.alternatives)

    @property
    def no_fit(self) -> bool:
        """No reading is plausible (an untrained network, a wrong noise schedule or time
        convention, a model that is not a denoiser)."""
        return not self.alternatives

    @property
    def passed(self) -> bool:
        return self.plausible(self.declared)

    def _reading(self, label: str) -> str:
        r = ", ".join(f"{v:.3g}" for v in self.ratios[label])
        return f"{label!r} (error ratios {r}; mean {self.score(label):.3g}; samples differ from {self.declared!r}'s by {self.distance[label]:.2g})"

    def message(self) -> str:
        """What the check found, in one paragraph: a pass, a mismatch, no fit, or an ambiguity."""
        lv = ", ".join(f"{v:g}" for v in self.levels)
        rule = (
            f"(each reading's samples, noised again at half-log-SNR {lv} and denoised, against the best linear "
            f"shrinkage of the same samples: a denoiser's ratio is at most {MAX_RATIO}, and below {INFORMATIVE} somewhere "
            "for data with structure)"
        )
        d = self.declared
        own = f"{d!r} (error ratios {', '.join(f'{v:.3g}' for v in self.ratios[d])}; mean {self.score(d):.3g})"
        if self.no_fit:
            best = min(self.ratios, key=lambda a: max(self.ratios[a]) if all(map(math.isfinite, self.ratios[a])) else math.inf)
            return (
                f"no reading of the model's output is a consistent denoiser {rule}: declared {own}; closest "
                f"{self._reading(best)}. An untrained network, a noise_schedule or time convention that is not the "
                "model's, or a model that is not a denoiser"
            )
        if self.mismatch:
            why = (
                "is not a consistent denoiser" if not self.consistent(d)
                else f"looks like a denoiser of Gaussian data (at no level below {INFORMATIVE}), where other readings explain structure"
            )
            wrap = " or ".join(f"prediction={a!r}" for a in self.alternatives)
            seen = "; ".join(self._reading(a) for a in self.alternatives)
            return (
                f"the model's outputs do not look like {d!r} predictions: read as {own} it {why} {rule}; "
                f"plausible readings: {seen}. Wrap it with as_model(..., {wrap}, noise_schedule=...)"
            )
        text = f"the model's outputs fit {d!r} predictions: {own} {rule}"
        if self.ambiguous:
            text += (
                "; these readings fit about as well but sample differently, and the probe cannot tell them apart: "
                + "; ".join(self._reading(a) for a in self.ambiguous)
            )
        return text


def _innermost(model):
    while not hasattr(model, "raw"):
        model = model.model
    return model


def _probe(den, z: jax.Array, z_again: jax.Array, run: Point, levels: Point, labels: tuple[str, ...]):
    """Every reading of ``den``'s output at once (one model call per step on the stacked
    batch): DDIM over ``run`` (``(S + 1,)`` points, the last clean data) from ``z`` ``(n,
    ...)``, then each reading's samples noised with ``z_again`` ``(k n, ...)`` at each of
    ``levels`` and denoised.  Returns the samples ``(L, n, ...)`` and the error ratios ``(L,
    levels)``."""
    L, n, shape = len(labels), z.shape[0], z.shape[1:]
    cdt = run.alpha.dtype
    readings = [den.replace(prediction=label) for label in labels]

    def predict(x, pt):  # x (L, m, ...) -> x0, eps (L, m, ...) in the compute dtype
        raw = den.raw(x.reshape(-1, *shape), pt).reshape(x.shape)
        preds = [r.convert(raw[k], x[k], pt) for k, r in enumerate(readings)]
        return jnp.stack([p.x0.astype(cdt) for p in preds]), jnp.stack([p.eps.astype(cdt) for p in preds])

    def step(x, i):
        pt = Point(*(v[i] for v in run))
        x0, eps = predict(x, pt)
        return (run.alpha[i + 1] * x0 + run.sigma[i + 1] * eps).astype(z.dtype), None

    x = jnp.broadcast_to((z.astype(cdt) * run.sigma[0]).astype(z.dtype), (L, *z.shape))
    samples, _ = jax.lax.scan(step, x, jnp.arange(run.lam.shape[0] - 1))
    s = samples.astype(cdt).reshape(L, n, -1)
    total, total2 = jnp.sum(s, axis=1, keepdims=True), jnp.sum(jnp.square(s), axis=1, keepdims=True)
    mu = (total - s) / (n - 1)  # leave-one-out: no estimator sees the sample it is judged on
    var = jnp.mean((total2 - jnp.square(s)) / (n - 1) - jnp.square(mu), axis=-1, keepdims=True)
    k = z_again.shape[0] // n
    s, mu, var = (jnp.tile(v, (1, k, 1)) for v in (s, mu, var))
    again = z_again.astype(cdt).reshape(k * n, -1)
    ratios = []
    for j in range(levels.lam.shape[0]):
        pt = Point(*(v[j] for v in levels))
        x = pt.alpha * s + pt.sigma * again
        x0, _ = predict(x.astype(z.dtype).reshape(L, k * n, *shape), pt)
        err = jnp.mean(jnp.square(x0.reshape(s.shape) - s), axis=(1, 2))
        shrink = mu + pt.alpha * var / (jnp.square(pt.alpha) * var + jnp.square(pt.sigma)) * (x - pt.alpha * mu)
        err_lin = jnp.mean(jnp.square(shrink - s), axis=(1, 2))
        ok = jnp.isfinite(err) & (err_lin > 0)
        ratios.append(jnp.where(ok, err / jnp.where(ok, err_lin, 1.0), jnp.inf))
    return samples, jnp.stack(ratios, axis=1)


_probe_jit = jax.jit(_probe, static_argnames=("labels",))


def check_model(model, noise_schedule: NoiseSchedule | None, noise, *, samples: int = 16, strict: bool = True) -> ModelCheck:
    """Reads the model's output as every prediction and tests each reading as a denoiser of
    its own samples (see the module docstring): about 30 batched model calls on ``5 x
    samples`` inputs.  Run it once after wrapping a new model.

    Args:
      model: the model as the samplers take it (:func:`rbe_jax.as_model`'s result, or a bare
        eps model of ``noise_schedule``'s process).
      noise_schedule: the model's noise schedule (``None``: the one the model carries).
      noise: ``(B, ...)`` standard-normal noise of the model's sample shape (the first
        ``samples`` are used; at least 4).
      samples: how many samples each reading draws (more: a steadier verdict, a longer run).
      strict: raise :class:`PredictionMismatch` when the declared reading is not plausible
        (another is, or none is), and warn when another plausible reading samples differently
        (else only report it).
    Returns:
      :class:`ModelCheck` (``.passed``, ``.mismatch``, ``.no_fit``, ``.ambiguous``;
      ``.message()`` says what was found, with the numbers).
    Raises:
      PredictionMismatch: with ``strict``, the declared prediction does not fit.
    """
    noise = check_noise(noise)
    noise_schedule = model_noise_schedule(model, noise_schedule)
    den = _innermost(as_denoiser(model, noise_schedule))
    n = min(int(samples), noise.shape[0])
    if n < 4:
        raise ValueError(f"check_model needs at least 4 noise samples, got {n}")
    lo, hi = noise_schedule.lam_range
    start, end = max(lo, RUN_FROM), min(hi, RUN_TO)
    cdt = compute_dtype(noise.dtype)
    run = Point(*(jnp.asarray(v, cdt) for v in noise_schedule.points(np.append(np.linspace(start, end, RUN_STEPS), np.inf))))
    levels = tuple(float(v) for v in np.clip(LEVELS, start, end))
    level_pts = Point(*(jnp.asarray(v, cdt) for v in noise_schedule.points(np.asarray(levels))))
    size = int(np.prod(noise.shape[1:]))
    k = int(min(8, max(1, math.ceil(MIN_VALUES / (n * size)))))
    z_again = jax.random.normal(jax.random.key(PROBE_SEED), (k * n, *noise.shape[1:]), noise.dtype)
    labels = tuple(p for p in PREDICTIONS if p != "velocity" or den.process.has_velocity)
    out, ratios = jax.device_get(_probe_jit(den, noise[:n], z_again, run, level_pts, labels))
    out = np.asarray(out, np.float64).reshape(len(labels), -1)
    ref = out[labels.index(den.prediction)]
    scale = float(np.sqrt(np.mean(np.square(ref))))
    with np.errstate(all="ignore"):
        spread = {label: float(np.sqrt(np.mean(np.square(o)))) for label, o in zip(labels, out)}
        dist = {label: float(np.sqrt(np.mean(np.square(o - ref))) / scale) if scale > 0 else math.inf for label, o in zip(labels, out)}
    dist[den.prediction] = 0.0
    c = ModelCheck(
        declared=den.prediction,
        levels=levels,
        ratios={label: tuple(float(v) for v in r) for label, r in zip(labels, ratios)},
        spread=spread,
        distance=dist,
        likely=None,
    )
    alts = c.alternatives
    c = c._replace(likely=c.declared if c.passed else alts[0] if alts else None)
    if strict and not c.passed:
        raise PredictionMismatch(c.message())
    if strict and c.ambiguous:
        warnings.warn(c.message(), stacklevel=2)
    return c
