"""What the schedule benchmarks share: the models, the seeded calibration and test noise, and
the scores.  ``schedules/compare.py`` and ``peers/diffusers.py`` use the same test noise, so their
tables can be read side by side."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

import rbe_jax as R

CALIB_SEED, TEST_SEED = 101, 202
# the mixture's worst 1% of samples (those that change modes) carry most of its squared error:
# large batches hold enough of them for stable scores and calibrations
DEFAULT_CALIB = {"gmm": 16384, "digits": 64, "digits_cond": 64}
DEFAULT_TEST = {"gmm": 16384, "digits": 256, "digits_cond": 256}
MODELS = tuple(DEFAULT_TEST)


class Bench(NamedTuple):
    model: Any  # for the test noise
    full: R.NoiseSchedule  # the training schedule
    grid: R.NoiseSchedule  # the K = 100 calibration grid
    calib: jax.Array
    test: jax.Array
    calib_model: Any  # for the calibration noise (differs from ``model`` only with per-sample labels)


def setup(name: str, n_calib: int | None = None, n_test: int | None = None, guidance: float = 2.0) -> Bench:
    """The model, its schedules and the seeded calibration and test noise.

    ``gmm``: an exact 32-d Gaussian mixture (``rbe_jax.testing``) on DDPM's linear betas;
    ``digits``: the shipped 16x16 digits U-Net; ``digits_cond``: the shipped class-conditional
    U-Net with classifier-free guidance of weight ``guidance``, labels 0-9 in turn over the
    samples of each batch."""
    n_calib, n_test = n_calib or DEFAULT_CALIB[name], n_test or DEFAULT_TEST[name]
    if name == "gmm":
        full = R.NoiseSchedule.linear(1000)
        model = R.testing.GaussianMixture.random(0, 32, 10, full)
        shape = (32,)
        grid = full.respace(100)
    elif name == "digits":
        from rbe_jax.zoo.checkpoint import load_model_info, pretrained_path

        info = load_model_info(pretrained_path("digits"))
        model, full, grid, shape = R.load_pretrained("digits"), info.noise_schedule, info.default_grid, info.image_shape
    elif name == "digits_cond":
        from rbe_jax.zoo.checkpoint import load_model_info, pretrained_path

        info = load_model_info(pretrained_path("digits_cond"))
        net, full, grid, shape = R.load_model(R.model_info("digits_cond").path), info.noise_schedule, info.default_grid, info.image_shape

        def guided(n):
            return R.ClassifierFreeGuidance(model=net, label=np.arange(n) % 10, scale=guidance, null_label=info.config.num_classes)

        calib = jax.random.normal(jax.random.key(CALIB_SEED), (n_calib, *shape))
        test = jax.random.normal(jax.random.key(TEST_SEED), (n_test, *shape))
        return Bench(guided(n_test), full, grid, calib, test, guided(n_calib))
    else:
        raise ValueError(f"unknown model {name!r}")
    calib = jax.random.normal(jax.random.key(CALIB_SEED), (n_calib, *shape))
    test = jax.random.normal(jax.random.key(TEST_SEED), (n_test, *shape))
    return Bench(model, full, grid, calib, test, model)


def per_sample_rmse(x, ref) -> np.ndarray:
    """``(B,)`` RMSE of each sample against the reference, in float64."""
    d = np.asarray(x, np.float64) - np.asarray(ref, np.float64)
    return np.sqrt(np.mean(d.reshape(len(d), -1) ** 2, axis=1))


def bootstrap_ratio(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """5% and 95% quantiles of RMSE(a) / RMSE(b) over paired resamples of the test samples
    (``a``, ``b``: per-sample mean squared errors)."""
    idx = np.random.default_rng(seed).integers(0, len(a), (n, len(a)))
    r = np.sqrt(a[idx].mean(1) / b[idx].mean(1))
    return float(np.quantile(r, 0.05)), float(np.quantile(r, 0.95))


def best99(mse: np.ndarray) -> np.ndarray:
    """The 99% smallest of the per-sample mean squared errors ``mse``, sorted (leaving out the
    ~1% of samples that change mode)."""
    return np.sort(mse)[: len(mse) - len(mse) // 100]


def scores(mse: np.ndarray) -> dict[str, float]:
    """From per-sample mean squared errors: ``rmse`` over all samples, ``rmse99`` over the best
    99% (:func:`best99`) and ``median``, the median per-sample RMSE (the typical sample)."""
    return dict(rmse=float(np.sqrt(mse.mean())), rmse99=float(np.sqrt(best99(mse).mean())), median=float(np.sqrt(np.median(mse))))


def rmse_and_median(x, ref) -> tuple[float, float]:
    """RMSE over all samples, and the median per-sample RMSE (the typical sample)."""
    per = per_sample_rmse(x, ref)
    return float(np.sqrt(np.mean(per**2))), float(np.median(per))


def python_loop(model, schedule: R.Schedule, solver="ddim"):
    """``run(noise)``: the sampler written as a Python loop of jitted steps (one dispatch per
    step), the yardstick of the scan's overhead."""
    import jax.numpy as jnp

    solver = R.core.solvers.get_solver(solver)
    den = R.core.models.as_denoiser(model, schedule.noise_schedule)
    pts = R.core.schedule.schedule_points(schedule, jnp.float32)
    steps = R.core.sampler.step_times(pts)

    @jax.jit
    def one(x, state, i):
        pred = den(x, R.core.noise.Point(*(v[i] for v in pts)))
        return solver.step(state, x, pred, R.core.solvers.StepTimes(*(v[i] for v in steps)))

    def run(noise):
        x = den.process.start(noise, pts.sigma[0])
        state = solver.init(x)
        for i in range(schedule.nfe):
            x, state = one(x, state, i)
        return x

    return run
