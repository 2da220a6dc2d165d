"""Exact test beds: Gaussian-mixture data with closed-form eps, and exact ODE solutions.

If the data are a Gaussian mixture, every noised marginal ``p_a`` is a Gaussian mixture
(means ``sqrt(a) mu_k``, variances ``a s_k^2 + 1 - a``), so ``eps(x, a) = -sigma grad log
p_a(x)`` is known exactly and the probability-flow ODE can be solved to any accuracy.
:class:`GaussianMixture` is a model (``model(x, t) -> eps``) that users can sample with
to test a sampler without a network.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from .noise import NoiseSchedule

__all__ = ["GaussianMixture", "gaussian_ode_solution", "reference_ode_solution"]


class GaussianMixture(struct.PyTreeNode):
    """A diagonal Gaussian mixture in ``D`` dimensions, usable as an exact eps model.

    Attributes:
      weights: ``(M,)`` mixture weights (sum to 1).
      means: ``(M, D)`` component means.
      stds: ``(M, D)`` per-dimension component standard deviations.
      alpha_bar: ``(T,)`` training alpha-bar table, used to map an integer timestep ``t``
        to its alpha-bar when called as ``model(x, t)``.

    Samples ``x`` may have any shape ``(B, ...)`` with ``prod(...) == D``.
    """

    weights: jax.Array
    means: jax.Array
    stds: jax.Array
    alpha_bar: jax.Array

    @classmethod
    def create(cls, weights, means, stds, noise_schedule: NoiseSchedule, dtype=None) -> "GaussianMixture":
        """Builds a mixture and checks its shapes.  ``dtype`` defaults to JAX's float type."""
        dtype = dtype or jnp.result_type(float)
        w = np.asarray(weights, np.float64)
        mu = np.asarray(means, np.float64)
        s = np.broadcast_to(np.asarray(stds, np.float64), mu.shape)
        if mu.ndim != 2 or w.shape != (mu.shape[0],):
            raise ValueError(f"means must be (M, D) and weights (M,), got {mu.shape} and {w.shape}")
        if np.any(w <= 0) or np.any(s <= 0):
            raise ValueError("weights and stds must be positive")
        if len(noise_schedule) != noise_schedule.num_train_timesteps:
            raise ValueError("noise_schedule must be the full training schedule, not a respaced grid")
        return cls(
            weights=jnp.asarray(w / w.sum(), dtype),
            means=jnp.asarray(mu, dtype),
            stds=jnp.asarray(s, dtype),
            alpha_bar=jnp.asarray(noise_schedule.alpha_bar, dtype),
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
    ) -> "GaussianMixture":
        """A random mixture: means uniform in ``[-mean_range, mean_range]^D``, per-dimension
        stds log-uniform in ``std_range``, Dirichlet-ish weights (all >= 0.5 / M)."""
        rng = np.random.default_rng(seed)
        means = rng.uniform(-mean_range, mean_range, size=(n_components, dim))
        lo, hi = np.log(std_range[0]), np.log(std_range[1])
        stds = np.exp(rng.uniform(lo, hi, size=(n_components, dim)))
        w = 0.5 + rng.uniform(size=n_components)
        return cls.create(w, means, stds, noise_schedule, dtype=dtype)

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def _component_log_probs(self, xf: jax.Array, a: jax.Array):
        """``xf``: ``(B, D)``, ``a``: ``(B,)``.  Returns log w_k + log N_k ``(B, M)``,
        the residuals ``(B, M, D)`` and the variances ``(B, M, D)``."""
        a = a[:, None, None]
        var = a * jnp.square(self.stds)[None] + (1.0 - a)
        diff = xf[:, None, :] - jnp.sqrt(a) * self.means[None]
        logn = -0.5 * jnp.sum(jnp.log(2.0 * math.pi * var) + jnp.square(diff) / var, axis=-1)
        return jnp.log(self.weights)[None] + logn, diff, var

    def eps_at(self, x: jax.Array, a: jax.Array) -> jax.Array:
        """Exact eps at alpha-bar ``a`` ``(B,)`` for samples ``x`` ``(B, ...)``."""
        xf = x.reshape(x.shape[0], -1)
        a = jnp.broadcast_to(jnp.asarray(a, xf.dtype), (x.shape[0],))
        logp, diff, var = self._component_log_probs(xf, a)
        r = jax.nn.softmax(logp, axis=-1)
        eps = jnp.sqrt(1.0 - a)[:, None] * jnp.sum(r[..., None] * diff / var, axis=1)
        return eps.reshape(x.shape)

    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        a = self.alpha_bar.astype(x.dtype)[t]
        return self.eps_at(x, a)

    def log_prob(self, x: jax.Array, a=1.0) -> jax.Array:
        """Log-density ``(B,)`` of the marginal at alpha-bar ``a`` (default: the data)."""
        xf = x.reshape(x.shape[0], -1)
        a = jnp.broadcast_to(jnp.asarray(a, xf.dtype), (x.shape[0],))
        logp, _, _ = self._component_log_probs(xf, a)
        return jax.scipy.special.logsumexp(logp, axis=-1)

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
      x: ``(B, D)`` samples at alpha-bar ``a_from``.
      a_from, a_to: scalars; ``a_to = 1`` maps to the data.
      mean, std: ``(D,)``.
    Returns:
      ``(B, D)`` the exact ODE endpoint.
    """
    sd_from = jnp.sqrt(a_from * std**2 + 1.0 - a_from)
    sd_to = jnp.sqrt(a_to * std**2 + 1.0 - a_to)
    z = (x - jnp.sqrt(a_from) * mean) / sd_from
    return jnp.sqrt(a_to) * mean + sd_to * z


def reference_ode_solution(eps_at, x, a_from, *, rtol: float = 1e-10, atol: float = 1e-10, max_steps: int = 200_000):
    """Solves the probability-flow ODE from alpha-bar ``a_from`` to clean data (``a = 1``)
    to tight tolerance with diffrax (Dopri8), in float64.

    The ODE is integrated in ``s = sigma / alpha = exp(-lambda)`` (``lambda``: half-log-SNR)
    for ``y = x / alpha``, where it reads ``dy/ds = eps(x, a(s))`` with ``a = 1 / (1 + s^2)``;
    DDIM is exactly Euler's method for it, and ``s = 0`` is the data, so the endpoint is
    reached exactly.  Needs ``jax_enable_x64`` and diffrax (a test / benchmark extra).

    Args:
      eps_at: ``eps_at(x, a) -> eps`` (e.g. ``GaussianMixture.eps_at``), float64-capable.
      x: ``(B, ...)`` starting samples at ``a_from``.
      a_from: scalar alpha-bar of the start.
    Returns:
      ``(B, ...)`` float64 endpoints at ``a = 1``.
    """
    try:
        import diffrax
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reference_ode_solution needs diffrax: pip install 'rbe_jax[bench]'") from e
    if not jax.config.jax_enable_x64:
        raise RuntimeError("reference_ode_solution needs float64: run under jax.enable_x64(True)")
    x = jnp.asarray(x, jnp.float64)
    s0 = math.sqrt((1.0 - float(a_from)) / float(a_from))

    def vf(s, y, args):
        a = 1.0 / (1.0 + s * s)
        xx = jnp.sqrt(a) * y
        return eps_at(xx, jnp.full((y.shape[0],), a, y.dtype))

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vf),
        diffrax.Dopri8(),
        t0=s0,
        t1=0.0,
        dt0=-s0 / 100.0,
        y0=x / math.sqrt(float(a_from)),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
    )
    return sol.ys[-1]
