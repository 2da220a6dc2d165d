"""What the schedule benchmarks share: the models, the seeded calibration and test noise, and
the scores.  ``schedules_compare.py`` and ``peers.py`` use the same test noise, so their
tables can be read side by side."""

from __future__ import annotations

import jax
import numpy as np

import rbe_jax as R

CALIB_SEED, TEST_SEED = 101, 202
DEFAULT_CALIB = {"gmm": 1024, "digits": 64}
DEFAULT_TEST = {"gmm": 2048, "digits": 256}


def setup(name: str, n_calib: int | None = None, n_test: int | None = None):
    """``(model, full training schedule, K = 100 grid, calibration noise, test noise)``.

    ``gmm``: an exact 32-d Gaussian mixture (``rbe_jax.testing``) on DDPM's linear betas;
    ``digits``: the shipped 16x16 digits U-Net."""
    if name == "gmm":
        full = R.NoiseSchedule.linear(1000)
        model = R.testing.GaussianMixture.random(0, 32, 10, full)
        shape = (32,)
        grid = full.respace(100)
    elif name == "digits":
        from rbe_jax.checkpoint import load_model_info, pretrained_path

        info = load_model_info(pretrained_path("digits"))
        model, full, grid, shape = R.load_pretrained("digits"), info.noise_schedule, info.default_grid, info.image_shape
    else:
        raise ValueError(f"unknown model {name!r}")
    calib = jax.random.normal(jax.random.key(CALIB_SEED), (n_calib or DEFAULT_CALIB[name], *shape))
    test = jax.random.normal(jax.random.key(TEST_SEED), (n_test or DEFAULT_TEST[name], *shape))
    return model, full, grid, calib, test


def per_sample_rmse(x, ref) -> np.ndarray:
    """``(B,)`` RMSE of each sample against the reference, in float64."""
    d = np.asarray(x, np.float64) - np.asarray(ref, np.float64)
    return np.sqrt(np.mean(d.reshape(len(d), -1) ** 2, axis=1))


def rmse_and_median(x, ref) -> tuple[float, float]:
    """RMSE over all samples, and the median per-sample RMSE (the typical sample)."""
    per = per_sample_rmse(x, ref)
    return float(np.sqrt(np.mean(per**2))), float(np.median(per))
