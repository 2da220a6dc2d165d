"""Continuous-time VP models: a fine NoiseSchedule, the model called with continuous t, and
RBE / calibration / solvers unchanged, on the exact Gaussian-mixture test bed."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rbe_jax as R


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_vp_continuous_schedule(kind):
    ns = R.NoiseSchedule.vp_continuous(kind)
    assert ns.times[0] == pytest.approx(1e-3) and np.all(np.diff(ns.times) > 0)
    assert np.all(np.diff(ns.alpha_bar) < 0) and 0.99 < ns.alpha_bar[0] < 1 and ns.alpha_bar[-1] < 1e-3
    if kind == "linear":
        t = ns.times[400]
        assert ns.alpha_bar[400] == pytest.approx(math.exp(-(0.1 * t + 0.5 * 19.9 * t * t)))
    g = ns.respace(100)
    np.testing.assert_array_equal(g.times, ns.times[g.timesteps])
    assert g.fingerprint != R.NoiseSchedule.linear(1000).respace(100).fingerprint


def _continuous_mixture(ns, dim=8, dtype=None):
    """An exact continuous-time model: eps(x, t) with alpha-bar(t) of the VP-linear SDE."""
    gm = R.testing.GaussianMixture.random(2, dim, 5, R.NoiseSchedule.linear(1000), dtype=dtype)

    def eps(x, t):
        a = jnp.exp(-(0.1 * t + 0.5 * 19.9 * t**2))
        return gm.eps_at(x, a)

    return gm, eps


def test_model_is_called_with_continuous_times():
    ns = R.NoiseSchedule.vp_continuous()
    seen = []
    model = R.continuous_time_model(lambda x, t: (jax.debug.callback(lambda v: seen.append(float(np.asarray(v)[0])), t), jnp.zeros_like(x))[1], ns)
    grid = ns.respace(100)
    sched = R.Schedule.from_indices(grid, [99, 50, 0, -1])
    jax.block_until_ready(R.rbe_sample(model, jnp.ones((2, 3)), sched))
    np.testing.assert_allclose(seen, [1.0, grid.times[50], 1e-3], rtol=1e-6)
    np.testing.assert_allclose(R.baseline_schedule(ns, 4, "uniform").model_times, 1.0 - 0.999 * np.arange(4) / 4, rtol=1e-9)
    with pytest.raises(ValueError, match="no continuous times"):
        R.continuous_time_model(lambda x, t: x, R.NoiseSchedule.linear(1000))


def test_rbe_on_a_continuous_time_model_against_the_exact_solution():
    pytest.importorskip("diffrax")
    ns = R.NoiseSchedule.vp_continuous()
    grid = ns.respace(100)
    gm, eps = _continuous_mixture(ns)
    model = R.continuous_time_model(eps, ns)
    noise = jax.random.normal(jax.random.key(0), (128, 8))
    with jax.enable_x64(True):
        gm64, _ = _continuous_mixture(ns, dtype=jnp.float64)
        ref = np.asarray(R.testing.reference_ode_solution(gm64.eps_at, jnp.asarray(np.asarray(noise), jnp.float64), grid.alpha_bar[-1]))
    errs = {}
    for nfe in (5, 10, 20):
        s = R.calibrate(model, grid, noise, nfe)
        assert s.nfe == nfe and s.meta.grid_fingerprint == grid.fingerprint
        for solver in ("ddim", "dpmpp2m"):
            x = np.asarray(jax.jit(R.rbe_sample)(model, noise, s, R.core.solvers.get_solver(solver)))
            errs[solver, nfe] = float(np.sqrt(np.mean((x - ref) ** 2)))
    for solver in ("ddim", "dpmpp2m"):
        assert errs[solver, 20] < errs[solver, 10] < errs[solver, 5], errs
    assert errs["dpmpp2m", 20] < errs["ddim", 20], errs
