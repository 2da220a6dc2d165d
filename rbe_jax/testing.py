"""Exact test beds: Gaussian-mixture data with a closed-form denoiser in every family and
prediction, and exact ODE solutions.

If the data are a Gaussian mixture, every noised marginal is a Gaussian mixture too (a
component ``N(m, s^2)`` becomes ``N(alpha m, alpha^2 s^2 + sigma^2)``), so ``eps`` and ``x0 =
E[x0 | x]`` are known exactly at every noise level, including pure noise, and the
probability-flow ODE can be solved to any accuracy.  :class:`GaussianMixture` is a model in
any family's own convention (``model(x, t) -> P`` for the prediction ``P`` it was made
with), usable to test a sampler without a network.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from .core.models import PREDICTIONS, as_model
from .core.noise import NoiseSchedule, _TableProcess, log_alpha_sigma

__all__ = ["GaussianMixture", "gaussian_ode_solution", "reference_ode_solution", "ode_solution"]


class GaussianMixture(struct.PyTreeNode):
    """A diagonal Gaussian mixture in ``D`` dimensions, usable as an exact model of any
    family and prediction.

    Attributes:
      weights: ``(M,)`` mixture weights (sum to 1).
      means: ``(M, D)`` component means.
      stds: ``(M, D)`` per-dimension component standard deviations.
      noise_schedule: the family and time convention it is called in (static).
      prediction: what ``__call__`` returns, one of :data:`rbe_jax.core.models.PREDICTIONS`.

    Called as ``model(x, t)`` with ``x`` in the family's own scaling and ``t`` its native
    time (fractional training timesteps for a table: the table is interpolated as
    :class:`rbe_jax.NoiseSchedule` does).  Samples ``x`` may have any shape ``(B, ...)``
    with ``prod(...) == D``.  :attr:`denoiser` is the matching :func:`rbe_jax.as_model`.
    """

    weights: jax.Array
    means: jax.Array
    stds: jax.Array
    noise_schedule: NoiseSchedule = struct.field(pytree_node=False)
    prediction: str = struct.field(pytree_node=False, default="eps")

    @classmethod
    def create(cls, weights, means, stds, noise_schedule: NoiseSchedule, dtype=None, prediction: str = "eps") -> "GaussianMixture":
        """Builds a mixture and checks its shapes.  ``dtype`` defaults to JAX's float type."""
        dtype = dtype or jnp.result_type(float)
        w = np.asarray(weights, np.float64)
        mu = np.asarray(means, np.float64)
        s = np.broadcast_to(np.asarray(stds, np.float64), mu.shape)
        if mu.ndim != 2 or w.shape != (mu.shape[0],):
            raise ValueError(f"means must be (M, D) and weights (M,), got {mu.shape} and {w.shape}")
        if np.any(w <= 0) or np.any(s <= 0):
            raise ValueError("weights and stds must be positive")
        if not isinstance(noise_schedule, NoiseSchedule):
            raise TypeError(f"noise_schedule must be a NoiseSchedule, got {type(noise_schedule).__name__}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        return cls(
            weights=jnp.asarray(w / w.sum(), dtype),
            means=jnp.asarray(mu, dtype),
            stds=jnp.asarray(s, dtype),
            noise_schedule=noise_schedule,
            prediction=prediction,
        )

    @classmethod
    def random(
        cls,
        seed: int,
        dim: int,
        n_components: int,
        noise_schedule: NoiseSchedule,
        std_range: tuple[float, float] = (0.02, 0.2),
        mean_range: float = 0.7,
        dtype=None,
        prediction: str = "eps",
    ) -> "GaussianMixture":
        """A random mixture: means uniform in ``[-mean_range, mean_range]^D``, per-dimension
        stds log-uniform in ``std_range``, Dirichlet-ish weights (all >= 0.5 / M)."""
        rng = np.random.default_rng(seed)
        means = rng.uniform(-mean_range, mean_range, size=(n_components, dim))
        lo, hi = np.log(std_range[0]), np.log(std_range[1])
        stds = np.exp(rng.uniform(lo, hi, size=(n_components, dim)))
        w = 0.5 + rng.uniform(size=n_components)
        return cls.create(w, means, stds, noise_schedule, dtype=dtype, prediction=prediction)

    def as_family(self, noise_schedule: NoiseSchedule, prediction: str = "eps") -> "GaussianMixture":
        """The same data distribution as a model of another family or prediction."""
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        return self.replace(noise_schedule=noise_schedule, prediction=prediction)

    @property
    def denoiser(self):
        """This model wrapped for the samplers (:func:`rbe_jax.as_model` with its prediction
        and noise schedule)."""
        return as_model(self, prediction=self.prediction, noise_schedule=self.noise_schedule)

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def _posterior(self, xf: jax.Array, a: jax.Array, one_minus_a: jax.Array):
        """``(eps, x0)`` ``(B, D)`` at VP alpha-bar ``a`` ``(B,)`` (``1 - a`` given separately,
        to keep its precision near clean data)."""
        a, om = a[:, None, None], one_minus_a[:, None, None]
        var = a * jnp.square(self.stds)[None] + om
        diff = xf[:, None, :] - jnp.sqrt(a) * self.means[None]
        logn = -0.5 * jnp.sum(jnp.log(2.0 * math.pi * var) + jnp.square(diff) / var, axis=-1)
        r = jax.nn.softmax(jnp.log(self.weights)[None] + logn, axis=-1)[..., None]
        eps = jnp.sqrt(one_minus_a)[:, None] * jnp.sum(r * diff / var, axis=1)
        x0 = jnp.sum(r * (self.means[None] + jnp.sqrt(a) * jnp.square(self.stds)[None] * diff / var), axis=1)
        return eps, x0

    def _alpha_bar(self, lam: jax.Array):
        """``(a, 1 - a)`` of the VP alpha-bar ``sigmoid(2 lam)``."""
        la, ls = log_alpha_sigma(lam, jnp)
        return jnp.exp(2.0 * la), jnp.exp(2.0 * ls)

    def denoise_at(self, x: jax.Array, lam: jax.Array):
        """Exact ``(eps, x0)`` ``(B, ...)`` at half-log-SNR ``lam`` (scalar or ``(B,)``) for
        samples ``x`` in the VP scaling."""
        xf = x.reshape(x.shape[0], -1)
        lam = jnp.broadcast_to(jnp.asarray(lam, xf.dtype), (x.shape[0],))
        eps, x0 = self._posterior(xf, *self._alpha_bar(lam))
        return eps.reshape(x.shape), x0.reshape(x.shape)

    def eps_at(self, x: jax.Array, a: jax.Array) -> jax.Array:
        """Exact eps at VP alpha-bar ``a`` (scalar or ``(B,)``) for samples ``x`` ``(B, ...)``."""
        xf = x.reshape(x.shape[0], -1)
        a = jnp.broadcast_to(jnp.asarray(a, xf.dtype), (x.shape[0],))
        return self._posterior(xf, a, 1.0 - a)[0].reshape(x.shape)

    def _at_time(self, xf: jax.Array, t: jax.Array, lam: jax.Array):
        """``(eps, x0)`` at the native times ``t`` ``(B,)`` (half-log-SNR ``lam``; VP scaling
        of ``xf``)."""
        a, om = self._alpha_bar(lam)
        proc = self.noise_schedule.process
        if isinstance(proc, _TableProcess):  # on a table entry: its own alpha-bar, as a table model
            table = jnp.asarray(proc.alpha_bar, xf.dtype)
            k = jnp.clip(jnp.round(t), 0, proc.T - 1).astype(jnp.int32)
            on = t == jnp.round(t)
            a, om = jnp.where(on, table[k], a), jnp.where(on, 1.0 - table[k], om)
        return self._posterior(xf, a, om)

    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        ns = self.noise_schedule
        xf = x.reshape(x.shape[0], -1)
        t = jnp.broadcast_to(jnp.asarray(t), (x.shape[0],))
        lam = ns.lam_of_time(t.astype(xf.dtype), jnp)
        scale = ns.process.scale(lam, jnp)[:, None]
        eps, x0 = self._at_time(xf / scale, t, lam)
        p = self.prediction
        if p == "eps":
            out = eps
        elif p == "x0":
            out = x0
        else:
            la, ls = log_alpha_sigma(lam, jnp)
            alpha, sigma = jnp.exp(la)[:, None], jnp.exp(ls)[:, None]
            if p == "v":
                out = alpha * eps - sigma * x0
            elif p == "score":
                out = -eps / (sigma * scale)
            else:  # velocity, in the model's own scaling
                da, ds = ns.process.velocity_coeffs(t.astype(xf.dtype), jnp)
                out = da[:, None] * x0 + ds[:, None] * eps
        return out.reshape(x.shape).astype(x.dtype)

    def log_prob(self, x: jax.Array, a=1.0) -> jax.Array:
        """Log-density ``(B,)`` of the marginal at VP alpha-bar ``a`` (default: the data)."""
        xf = x.reshape(x.shape[0], -1)
        a = jnp.broadcast_to(jnp.asarray(a, xf.dtype), (x.shape[0],))[:, None, None]
        var = a * jnp.square(self.stds)[None] + (1.0 - a)
        diff = xf[:, None, :] - jnp.sqrt(a) * self.means[None]
        logn = -0.5 * jnp.sum(jnp.log(2.0 * math.pi * var) + jnp.square(diff) / var, axis=-1)
        return jax.scipy.special.logsumexp(jnp.log(self.weights)[None] + logn, axis=-1)

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` exact data samples ``(n, D)``."""
        kc, kz = jax.random.split(key)
        comp = jax.random.categorical(kc, jnp.log(self.weights), shape=(n,))
        z = jax.random.normal(kz, (n, self.dim), self.means.dtype)
        return self.means[comp] + self.stds[comp] * z


def gaussian_ode_solution(x, a_from, a_to, mean, std):
    """Exact probability-flow ODE map for Gaussian data ``N(mean, diag(std^2))``.

    Every marginal is Gaussian and the flow is affine per dimension: it standardises under
    the marginal at ``a_from`` and de-standardises under the marginal at ``a_to``.

    Args:
      x: ``(B, D)`` samples at VP alpha-bar ``a_from`` (VP scaling).
      a_from, a_to: scalars; ``a_to = 1`` maps to the data.
      mean, std: ``(D,)``.
    Returns:
      ``(B, D)`` the exact ODE endpoint.
    """
    sd_from = jnp.sqrt(a_from * std**2 + 1.0 - a_from)
    sd_to = jnp.sqrt(a_to * std**2 + 1.0 - a_to)
    z = (x - jnp.sqrt(a_from) * mean) / sd_from
    return jnp.sqrt(a_to) * mean + sd_to * z


def _diffrax():
    try:
        import diffrax
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the reference ODE solve needs diffrax: pip install 'rbe_jax[bench]'") from e
    if not jax.config.jax_enable_x64:
        raise RuntimeError("the reference ODE solve needs float64: run under jax.enable_x64(True)")
    return diffrax


def _solve(diffrax, vf, t0, t1, y0, rtol, atol, max_steps):
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vf), diffrax.Dopri8(), t0=t0, t1=t1, dt0=(t1 - t0) / 100.0, y0=y0,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=max_steps,
    )
    return sol.ys[-1]


def ode_solution(gm: GaussianMixture, x, lam_from: float, lam_to: float = math.inf, *, rtol: float = 1e-10, atol: float = 1e-10, max_steps: int = 200_000):
    """The probability-flow ODE of ``gm`` from half-log-SNR ``lam_from`` (``-inf`` allowed:
    pure noise) to clean data, solved to tight tolerance with diffrax (Dopri8) in float64.

    With a finite ``lam_to`` the solve stops there and returns the exact denoiser's x0 at
    that point: the clean endpoint of a model trained down to ``lam_to`` only (every
    sampler's last step to clean data is that jump), i.e. the sampler's own target.

    In the VP scaling, ``d(x / sigma) / d(e^lam) = x0`` and ``d(x / alpha) / d(e^-lam) =
    eps``: the first form is integrated from ``e^lam_from`` up to ``e^0 = 1`` when the start
    lies below ``lam = 0`` (it is finite at pure noise), the second from ``e^-max(lam_from,
    0)`` down to ``0`` (clean data, reached exactly).  Needs ``jax_enable_x64`` and diffrax.

    Args:
      gm: the mixture (float64-capable).
      x: ``(B, ...)`` starting samples at ``lam_from``, VP scaling.
      lam_to: where the ODE solve stops (``+inf``: clean data, the exact ODE endpoint).
    Returns:
      ``(B, ...)`` float64 endpoints at clean data.
    """
    diffrax = _diffrax()
    x = jnp.asarray(x, jnp.float64)
    lam_from, lam_to = float(lam_from), float(lam_to)
    if lam_from < 0.0:  # w = x / sigma, r = e^lam: dw/dr = x0(sigma w, log r)
        def vf_low(r, w, args):
            lam = jnp.log(r)
            sig = jnp.exp(log_alpha_sigma(lam, jnp)[1])
            return gm.denoise_at(sig * w, lam)[1]

        sig0 = math.exp(float(log_alpha_sigma(np.asarray(lam_from))[1]))
        w = _solve(diffrax, vf_low, math.exp(lam_from), 1.0, x / sig0, rtol, atol, max_steps)
        x, lam_from = w * math.sqrt(0.5), 0.0

    def vf_high(s, y, args):  # y = x / alpha, s = e^-lam: dy/ds = eps(alpha y, -log s)
        alpha = 1.0 / jnp.sqrt(1.0 + s * s)
        return gm.denoise_at(alpha * y, -jnp.log(s))[0]

    s0, s1 = math.exp(-lam_from), math.exp(-lam_to)
    alpha0 = 1.0 / math.sqrt(1.0 + s0 * s0)
    y = _solve(diffrax, vf_high, s0, s1, x / alpha0, rtol, atol, max_steps)
    if s1 == 0.0:
        return y
    return gm.denoise_at(y / math.sqrt(1.0 + s1 * s1), lam_to)[1]


def reference_ode_solution(eps_at, x, a_from, *, rtol: float = 1e-10, atol: float = 1e-10, max_steps: int = 200_000):
    """Solves the probability-flow ODE from VP alpha-bar ``a_from > 0`` to clean data (``a =
    1``) to tight tolerance with diffrax (Dopri8), in float64.

    The ODE is integrated in ``s = sigma / alpha = exp(-lambda)`` for ``y = x / alpha``, where
    it reads ``dy/ds = eps(x, a(s))`` with ``a = 1 / (1 + s^2)``; DDIM is exactly Euler's
    method for it, and ``s = 0`` is the data, so the endpoint is reached exactly.  Needs
    ``jax_enable_x64`` and diffrax (a test / benchmark extra).  For a mixture, and for starts
    at pure noise, :func:`ode_solution` does the same.

    Args:
      eps_at: ``eps_at(x, a) -> eps`` (e.g. ``GaussianMixture.eps_at``), float64-capable.
      x: ``(B, ...)`` starting samples at ``a_from`` (VP scaling).
      a_from: scalar alpha-bar of the start.
    Returns:
      ``(B, ...)`` float64 endpoints at ``a = 1``.
    """
    diffrax = _diffrax()
    x = jnp.asarray(x, jnp.float64)
    s0 = math.sqrt((1.0 - float(a_from)) / float(a_from))

    def vf(s, y, args):
        a = 1.0 / (1.0 + s * s)
        return eps_at(jnp.sqrt(a) * y, jnp.full((y.shape[0],), a, y.dtype))

    return _solve(diffrax, vf, s0, 0.0, x / math.sqrt(float(a_from)), rtol, atol, max_steps)
