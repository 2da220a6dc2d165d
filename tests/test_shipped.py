"""The shipped models and their schedules, measured: samples a classifier recognises, labels
followed under guidance, bfloat16 close to float32, and every model's default schedule
(``R.pretrained_schedule``, what the CLI samples with) more accurate on fresh noise than the
best fixed spacing of its solver."""

import functools

import jax
import numpy as np
import pytest

import rbe_jax as R
from rbe_jax.zoo.checkpoint import load_model_info, pretrained_path


def test_shipped_model_is_small_and_complete():
    path = pretrained_path("digits")
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert size <= 10 * 2**20
    info = load_model_info(path)
    assert info.image_shape == (16, 16, 1) and info.meta["weights"] == "EMA"
    assert info.noise_schedule == R.NoiseSchedule.linear(1000)
    with pytest.raises(ValueError, match="unknown pretrained"):
        pretrained_path("cifar")


@functools.cache
def _classifier():
    """The evaluation classifier, trained once for the suite (only this file trains it)."""
    pytest.importorskip("sklearn")
    from rbe_jax.zoo.data import load_digits
    from rbe_jax.zoo.metrics import train_digit_classifier

    x, y = load_digits(16)
    return train_digit_classifier(x, y, steps=300)


def _assert_recognised(samples):
    """Finite samples that the classifier recognises as digits (confidence >= 0.9) at least
    half the time, and far more often than uniform noise."""
    assert np.all(np.isfinite(samples))
    clf = _classifier()
    conf = clf.features_and_probs(samples)[1].max(1)
    blobs = np.asarray(jax.random.uniform(jax.random.key(1), samples.shape, minval=-1, maxval=1))
    assert (conf >= 0.9).mean() >= 0.5
    assert (conf >= 0.9).mean() > (clf.features_and_probs(blobs)[1].max(1) >= 0.9).mean() + 0.3


@pytest.mark.slow
def test_shipped_model_samples_look_like_digits():
    path = pretrained_path("digits")
    grid = load_model_info(path).default_grid
    model = R.load_pretrained("digits")
    noise = jax.random.normal(jax.random.key(11), (48, 16, 16, 1))
    s = R.Schedule.load(path / "schedules" / "rbe_nfe10.json", grid)
    _assert_recognised(np.asarray(jax.jit(R.rbe_sample)(model, noise, s, R.ddim())))


@pytest.mark.slow
def test_shipped_conditional_model_follows_its_labels():
    clf = _classifier()
    path = pretrained_path("digits_cond")
    info = load_model_info(path)
    assert info.config.num_classes == 10
    labels = np.arange(40) % 10
    guided = R.load_pretrained("digits_cond", label=labels, guidance=2.0)
    noise = jax.random.normal(jax.random.key(5), (40, 16, 16, 1))
    samples = np.asarray(jax.jit(R.rbe_sample)(guided, noise, R.baseline_schedule(info.default_grid, 10, "uniform")))
    pred = clf.features_and_probs(samples)[1].argmax(1)
    assert np.mean(pred == labels) >= 0.8


def test_shipped_model_in_bfloat16_matches_float32():
    """bfloat16 parameters and noise: finite samples in bfloat16, close to float32 sampling
    of the same (rounded) noise on the shipped RBE schedule."""
    from flax import nnx

    path = pretrained_path("digits")
    grid = load_model_info(path).default_grid
    sched = R.Schedule.load(path / "schedules" / "rbe_nfe10.json", grid)
    model = R.load_pretrained("digits")
    graphdef, state = nnx.split(model)
    low = nnx.merge(graphdef, jax.tree_util.tree_map(lambda a: a.astype(jax.numpy.bfloat16) if a.dtype == np.float32 else a, state))
    noise = jax.random.normal(jax.random.key(5), (16, 16, 16, 1)).astype(jax.numpy.bfloat16)
    want = np.asarray(R.rbe_sample(model, noise.astype(np.float32), sched, R.dpmpp2m()))
    x = R.rbe_sample(low, noise, sched, R.dpmpp2m(), check_finite=True)
    assert x.dtype == jax.numpy.bfloat16
    err = np.sqrt(np.mean((np.asarray(x, np.float32) - want) ** 2))
    assert err < 0.05, err  # pixel range [-1, 1]; bfloat16 keeps ~3 significant digits


@pytest.mark.slow
def test_shipped_flow_model_samples_look_like_digits():
    """digits_flow, rectified flow fed 1000 t: at 10 NFE on its shipped UniPC schedule the
    samples are recognised as digits as often as the digits model's are (the same criterion)."""
    info = R.model_info("digits_flow")
    assert info.prediction == "velocity" and info.noise_schedule == R.NoiseSchedule.flow(time_scale=1000.0)
    model = R.load_denoiser("digits_flow")
    noise = jax.random.normal(jax.random.key(11), (48, 16, 16, 1))
    R.check_model(model, info.noise_schedule, noise)  # its label fits
    s = R.Schedule.load(pretrained_path("digits_flow") / "schedules" / "optimized_nfe10_unipc.json", info.noise_schedule)
    assert s.nfe == 10 and s.method == "optimized" and np.isneginf(np.asarray(s.lam)[0])  # from pure noise
    _assert_recognised(np.asarray(jax.jit(R.rbe_sample)(model, noise, s, R.unipc())))




@pytest.mark.slow
def test_digit_classifier_learns_the_digits():
    clf = _classifier()
    from rbe_jax.zoo.data import load_digits

    x, _ = load_digits(16)
    assert clf.holdout_accuracy > 0.9
    f, p = clf.features_and_probs(x[:50])
    assert f.shape == (50, 64) and p.shape == (50, 10)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    noise = np.random.default_rng(0).uniform(-1, 1, size=(200, 16, 16, 1)).astype(np.float32)
    assert (clf.features_and_probs(noise)[1].max(1) >= 0.9).mean() < (p.max(1) >= 0.9).mean()


@pytest.mark.slow
@pytest.mark.parametrize("name, cases", [("digits", [(10, "unipc"), (5, "dpmpp2m")]), ("digits_flow", [(10, "unipc")])])
def test_default_schedules_beat_every_fixed_spacing_on_fresh_noise(name, cases):
    """On 48 samples of a key no shipped schedule was made or chosen with, against a 150-step
    DPM-Solver++(2M) solve of the same noise: the default schedule's RMSE is below 0.9x, and
    its median per-sample error below, those of the best fixed spacing with the same solver
    (the learned 2M schedule with its learned coefficients)."""
    from rbe_jax.core.schedule import valid_baselines

    info = R.model_info(name)
    model = R.load_denoiser(name)
    teacher = R.make_teacher(model, info.noise_schedule, jax.random.normal(jax.random.key(4242), (48, 16, 16, 1)), 150)
    for nfe, solver in cases:
        s = R.pretrained_schedule(name, nfe, solver)
        mine = R.schedule_stats(model, s, R.learned_solver(s) if s.info.get("coefficients") else solver, teacher)
        fixed = {k: R.schedule_stats(model, R.baseline_schedule(info.noise_schedule, nfe, k), solver, teacher) for k in valid_baselines(info.noise_schedule)}
        best = min(fixed.values(), key=lambda st: st.rmse)
        assert mine.rmse < 0.9 * best.rmse and mine.median < best.median, (name, nfe, solver, s.method, mine, best)


def test_sampling_a_learned_coefficient_schedule_with_another_solver_warns():
    """The learned 2M coefficients were dropped without a word (samples off by up to 0.76)."""
    s = R.pretrained_schedule("digits_flow", 5, "dpmpp2m")
    assert s.info.get("coefficients")
    model = R.load_denoiser("digits_flow")
    z = jax.random.normal(jax.random.key(0), (2, 16, 16, 1))
    with pytest.warns(UserWarning, match="learned solver coefficients.*R.learned_solver"):
        R.rbe_sample(model, z, s, "dpmpp2m")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        R.rbe_sample(model, z, s, R.learned_solver(s))
