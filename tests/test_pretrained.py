"""The shipped digits models and their schedules."""

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
    """The evaluation classifier, trained once for this file's tests."""
    pytest.importorskip("sklearn")
    from rbe_jax.zoo.data import load_digits
    from rbe_jax.zoo.metrics import train_digit_classifier

    x, y = load_digits(16)
    return train_digit_classifier(x, y, steps=300)


@pytest.mark.parametrize("nfe", [5, 8, 10, 15, 20])
def test_shipped_schedules_fit_the_model_grid(nfe):
    path = pretrained_path("digits")
    grid = load_model_info(path).default_grid
    s = R.Schedule.load(path / "schedules" / f"rbe_nfe{nfe}.json", grid)
    assert s.nfe == nfe and s.method == "rbe" and s.tau > 0


def test_shipped_model_samples_look_like_digits():
    clf = _classifier()
    path = pretrained_path("digits")
    grid = load_model_info(path).default_grid
    model = R.load_pretrained("digits")
    noise = jax.random.normal(jax.random.key(11), (48, 16, 16, 1))
    s = R.Schedule.load(path / "schedules" / "rbe_nfe10.json", grid)
    samples = np.asarray(jax.jit(R.rbe_sample)(model, noise, s))
    assert np.all(np.isfinite(samples))
    conf = clf.features_and_probs(samples)[1].max(1)
    blobs = np.asarray(jax.random.uniform(jax.random.key(1), (48, 16, 16, 1), minval=-1, maxval=1))
    # samples are recognised as digits far more often than noise is
    assert (conf >= 0.9).mean() >= 0.5
    assert (conf >= 0.9).mean() > (clf.features_and_probs(blobs)[1].max(1) >= 0.9).mean() + 0.3


def test_shipped_conditional_model_follows_its_labels():
    clf = _classifier()
    path = pretrained_path("digits_cond")
    info = load_model_info(path)
    assert info.config.num_classes == 10
    model = R.load_pretrained("digits_cond")
    labels = np.arange(40) % 10
    guided = R.ClassifierFreeGuidance(model=model, label=labels, scale=2.0, null_label=10)
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


def test_shipped_guided_schedules():
    path = pretrained_path("digits_cond")
    info = load_model_info(path)
    names = sorted(f.name for f in (path / "schedules").glob("*.json"))
    assert {f"rbe_nfe{n}_w2.json" for n in (5, 8, 10, 15, 20)} | {"rbe_nfe10_w1.json", "rbe_nfe10_w4.json"} <= set(names)
    assert {f"optimized_nfe{n}_unipc_w2.json" for n in (5, 8, 10)} | {"optimized_nfe10_unipc_w1.json", "optimized_nfe10_unipc_w4.json"} <= set(names)
    for name in names:
        if name.startswith("rbe_"):
            s = R.Schedule.load(path / "schedules" / name, info.default_grid)
            assert s.method == "rbe" and f"rbe_nfe{s.nfe}_w{s.info['guidance']:g}.json" == name
        else:  # optimized on every training step
            s = R.Schedule.load(path / "schedules" / name, info.noise_schedule)
            assert s.method == "optimized" and f"optimized_nfe{s.nfe}_{s.info['solver']}_w{s.info['guidance']:g}.json" == name
            assert s.info["rmse"] <= s.info["start_rmse"] == s.info["candidates"][s.info["start"]]


@pytest.mark.parametrize("solver", ["unipc", "dpmpp2m"])
def test_shipped_optimized_schedules(solver):
    path = pretrained_path("digits")
    info = load_model_info(path)
    for nfe in (5, 8, 10, 15, 20):
        s = R.Schedule.load(path / "schedules" / f"optimized_nfe{nfe}_{solver}.json", info.noise_schedule)
        assert s.nfe == nfe and s.method == "optimized" and s.info["solver"] == solver
        assert s.info["rmse"] <= s.info["start_rmse"] == s.info["candidates"][s.info["start"]]  # never worse than its start


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
    samples = np.asarray(jax.jit(R.rbe_sample)(model, noise, s, R.unipc()))
    assert np.all(np.isfinite(samples))
    clf = _classifier()
    conf = clf.features_and_probs(samples)[1].max(1)
    blobs = np.asarray(jax.random.uniform(jax.random.key(1), (48, 16, 16, 1), minval=-1, maxval=1))
    assert (conf >= 0.9).mean() >= 0.5
    assert (conf >= 0.9).mean() > (clf.features_and_probs(blobs)[1].max(1) >= 0.9).mean() + 0.3


@pytest.mark.parametrize("nfe", [5, 8, 10, 15, 20])
def test_shipped_flow_schedules(nfe):
    path = pretrained_path("digits_flow") / "schedules"
    info = R.model_info("digits_flow")
    rbe = R.Schedule.load(path / f"rbe_nfe{nfe}.json", info.default_grid)
    assert rbe.nfe == nfe and rbe.indices[:2].tolist() == [99, 98]  # every path leaves pure noise by one exact step
    opt = R.Schedule.load(path / f"optimized_nfe{nfe}_unipc.json", info.noise_schedule)
    assert opt.nfe == nfe and opt.info["solver"] == "unipc" and opt.info["rmse"] <= opt.info["start_rmse"]


@pytest.mark.parametrize("name", ["digits", "digits_flow"])
def test_shipped_learned_schedules_are_the_default(name):
    """Learned schedules ship only where they beat the previous default on held-out noise
    (scripts/ship_learned_schedules.py); where one ships, it is what --schedule auto and
    R.pretrained_schedule pick."""
    info = R.model_info(name)
    files = sorted((pretrained_path(name) / "schedules").glob("learned_*.json"))
    for f in files:
        s = R.Schedule.load(f, info.noise_schedule)
        solver = s.info["solver"]
        assert s.method == "learned" and f.name == f"learned_nfe{s.nfe}_{solver}.json"
        assert s.info["bench_test"]["rmse"] > 0 and "bench/learned.py" in s.info["made_by"]
        assert R.pretrained_schedule(name, s.nfe, solver) == s
