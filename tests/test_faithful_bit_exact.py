"""The faithful RBE mode is bit-exact across the continuous-time rewrite: paths, calibrated
schedules and samples equal what the integer-grid core gave (``tests/data/golden_v0.npz``,
made by ``tests/data/make_golden_v0.py`` at commit fb00a74) for the same model, grid and
noise, on the exact mixture and on the shipped digits model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rbe_jax as R
from rbe_jax.zoo.checkpoint import model_info, pretrained_path

NET_ATOL = 1e-4  # a U-Net's samples across x86-64 instruction sets (see test_shipped_digits_model)
GOLDEN = np.load(__import__("pathlib").Path(__file__).parent / "data" / "golden_v0.npz")


@pytest.fixture(scope="module")
def gmm_case(linear, grid):
    gm = R.testing.GaussianMixture.random(0, 8, 6, linear)
    return gm, grid, jax.random.normal(jax.random.key(0), (64, 8), jnp.float32)


@pytest.mark.parametrize("tau", [0.05, 0.3, 2.0])
def test_backward_error_paths(gmm_case, tau):
    gm, grid, noise = gmm_case
    r = R.adaptive_paths(gm, grid, noise, tau)
    np.testing.assert_array_equal(r.paths, GOLDEN[f"gmm_paths_tau{tau}"])
    np.testing.assert_array_equal(r.samples, GOLDEN[f"gmm_samples_tau{tau}"])


def test_local_error_paths(gmm_case):
    gm, grid, noise = gmm_case
    r = R.local_error_paths(gm, grid, noise, 0.01)
    np.testing.assert_array_equal(r.paths, GOLDEN["gmm_local_paths"])
    np.testing.assert_array_equal(r.evals, GOLDEN["gmm_local_evals"])


@pytest.mark.parametrize("nfe", [5, 10])
def test_calibrated_schedules_and_their_samples(gmm_case, nfe):
    gm, grid, noise = gmm_case
    s = R.calibrate(gm, grid, noise, nfe)
    np.testing.assert_array_equal(s.indices, GOLDEN[f"gmm_calib_nfe{nfe}_indices"])
    assert s.tau == GOLDEN[f"gmm_calib_nfe{nfe}_tau"]
    local = R.calibrate(gm, grid, noise, nfe, rule="local_error")
    np.testing.assert_array_equal(local.indices, GOLDEN[f"gmm_calib_local_nfe{nfe}_indices"])
    assert local.tau == GOLDEN[f"gmm_calib_local_nfe{nfe}_tau"]
    for solver in ("ddim", "dpmpp2m", "dpmpp3m"):
        np.testing.assert_array_equal(R.rbe_sample(gm, noise, local, solver), GOLDEN[f"gmm_sample_nfe{nfe}_{solver}"], err_msg=solver)
    # UniPC's coefficients are now written with pure-noise limits: the same formulas, rounded alike within 1e-6
    np.testing.assert_allclose(R.rbe_sample(gm, noise, local, "unipc"), GOLDEN[f"gmm_sample_nfe{nfe}_unipc"], rtol=0, atol=2e-6)


def test_shipped_digits_model():
    model = R.load_pretrained("digits")
    info = model_info("digits")
    grid = info.default_grid
    z = jax.random.normal(jax.random.key(5), (8, 16, 16, 1))
    np.testing.assert_array_equal(R.adaptive_paths(model, grid, z, 0.5).paths, GOLDEN["digits_paths_tau0.5"])
    s = R.calibrate(model, grid, z, 8, search_samples=8)
    np.testing.assert_array_equal(s.indices, GOLDEN["digits_calib_nfe8_indices"])
    assert s.tau == GOLDEN["digits_calib_nfe8_tau"]
    # The integer results above (paths, indices) and tau are exact on any CPU.  The samples are
    # network outputs: XLA's float32 convolution kernels round differently on AVX2 and AVX-512
    # machines (1.5e-5 measured on digits values of order 1), so they match to NET_ATOL.
    shipped = R.Schedule.load(pretrained_path("digits") / "schedules" / "rbe_nfe10.json", grid)
    np.testing.assert_allclose(R.rbe_sample(model, z, shipped, "ddim"), GOLDEN["digits_rbe10_ddim"], rtol=0, atol=NET_ATOL)
    np.testing.assert_allclose(R.rbe_sample(model, z, shipped, "unipc"), GOLDEN["digits_rbe10_unipc"], rtol=0, atol=NET_ATOL)
    opt = R.Schedule.load(pretrained_path("digits") / "schedules" / "optimized_nfe10_unipc.json", info.noise_schedule)
    np.testing.assert_allclose(R.rbe_sample(model, z, opt, "unipc"), GOLDEN["digits_opt10_unipc"], rtol=0, atol=NET_ATOL)
