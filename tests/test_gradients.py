"""Gradients with respect to a model's parameters through the sampler, for every solver in
every family, schedules from pure noise included: float32 reverse mode against float64
reverse mode, and float64 reverse mode against a central finite difference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rbe_jax as R

FAMILIES = {
    "ddpm": (R.NoiseSchedule.linear(1000), "eps"),
    "ve": (R.NoiseSchedule.ve(0.01, 50.0), "score"),
    "edm": (R.NoiseSchedule.edm(), "x0"),
    "flow": (R.NoiseSchedule.flow(time_scale=1000.0), "velocity"),  # starts at pure noise
    "ztsnr": (R.NoiseSchedule.from_betas(np.r_[np.linspace(1e-4, 0.02, 999), 1.0]), "v"),  # pure noise too
}
SOLVERS = {"ddim": R.ddim(), "dpmpp2m": R.dpmpp2m(), "dpmpp3m": R.dpmpp3m(), "unipc": R.unipc(), "unip": R.unipc(corrector=False)}


def _loss_and_grad(family: str, solver, dtype):
    ns, pred = FAMILIES[family]
    gm = R.testing.GaussianMixture.random(0, 4, 3, R.NoiseSchedule.vp_continuous(), dtype=dtype).as_family(ns, pred)
    z = jax.random.normal(jax.random.key(1), (16, 4), jnp.float32).astype(dtype)
    s = R.baseline_schedule(ns, 6)

    def loss(means):
        return jnp.mean(R.rbe_sample(gm.replace(means=means).denoiser, z, s, solver) ** 2)

    return jax.jit(jax.value_and_grad(loss)), gm.means


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_parameter_gradients_of_every_solver_match_finite_differences(family):
    for name, solver in SOLVERS.items():
        vg32, means32 = _loss_and_grad(family, solver, jnp.float32)
        g32 = np.asarray(vg32(means32)[1], np.float64)
        with jax.enable_x64(True):
            vg64, means = _loss_and_grad(family, solver, jnp.float64)
            g64 = np.asarray(vg64(means)[1])
            # one random direction: (L(m + e u) - L(m - e u)) / 2e = <grad, u> to O(e^2)
            u = np.asarray(jax.random.normal(jax.random.key(2), means.shape, jnp.float64))
            eps = 1e-5
            fd = (float(vg64(means + eps * u)[0]) - float(vg64(means - eps * u)[0])) / (2 * eps)
        assert np.all(np.isfinite(g32)), (family, name, g32)
        np.testing.assert_allclose(float(np.sum(g64 * u)), fd, rtol=1e-6, atol=1e-9, err_msg=f"{family} {name}: float64 gradient")
        # float32 rounding through 6 steps of a network-free model: 1e-3 of the largest entry
        np.testing.assert_allclose(g32, g64, rtol=0, atol=1e-3 * np.abs(g64).max(), err_msg=f"{family} {name}: float32 gradient")
