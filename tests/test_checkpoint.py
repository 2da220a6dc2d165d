import functools
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rbe_jax as R
from rbe_jax.zoo.checkpoint import CheckpointError, load_model, load_model_info, save_model
from rbe_jax.zoo.nets import UNetConfig

TINY = UNetConfig(image_size=8, base_channels=8, channel_mults=(1, 2), attn_heads=2, num_groups=4)
SPEC = dict(kind="linear", T=1000, beta_start=1e-4, beta_end=0.02)


@functools.lru_cache(maxsize=None)
def _random_tiny(name: str = "tiny_unet"):
    """A tiny U-Net (``TINY``) whose zero-initialised output layers are randomised, so outputs
    differ: restored from ``tests/data`` (``make_tiny_models.py`` wrote it), once per process;
    ``"tiny_cond_unet"`` is the class-conditional one."""
    return load_model(Path(__file__).parent / "data" / name)


@pytest.fixture()
def saved(tmp_path):
    m = _random_tiny()
    path = save_model(tmp_path / "model", m, noise_schedule_spec=SPEC, meta={"grid_K": 50})
    return m, path


def test_round_trip_gives_bit_identical_samples(saved):
    m, path = saved
    restored = load_model(path)
    info = load_model_info(path)
    assert info.config == TINY and info.image_shape == (8, 8, 1) and info.default_grid.K == 50
    assert info.noise_schedule == R.NoiseSchedule.linear(1000)
    noise = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    sched = R.baseline_schedule(info.default_grid, 5, "logsnr")
    a = jax.jit(R.rbe_sample)(m, noise, sched)
    b = jax.jit(R.rbe_sample)(restored, noise, sched)
    assert float(jnp.std(a)) > 0
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_save_refuses_to_overwrite(saved):
    m, path = saved
    with pytest.raises(FileExistsError):
        save_model(path, m, noise_schedule_spec=SPEC)
    save_model(path, m, noise_schedule_spec=SPEC, overwrite=True)
    assert not [p for p in path.parent.iterdir() if ".tmp" in p.name]


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_model(tmp_path / "nowhere")


def test_missing_config(saved):
    _, path = saved
    (path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="missing config.json"):
        load_model(path)


def test_truncated_config(saved):
    _, path = saved
    text = (path / "config.json").read_text()
    (path / "config.json").write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(path)


def _biggest_param_file(path):
    return max((p for p in (path / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def test_truncated_parameter_file(saved):
    _, path = saved
    f = _biggest_param_file(path)
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"params/.* is truncated or corrupted"):
        load_model(path)


def test_corrupted_parameter_file(saved):
    _, path = saved
    f = _biggest_param_file(path)
    b = bytearray(f.read_bytes())
    b[len(b) // 2] ^= 0xFF
    f.write_bytes(bytes(b))
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_model(path)


def test_missing_parameter_directory(saved):
    _, path = saved
    shutil.rmtree(path / "params")
    with pytest.raises(CheckpointError, match="missing params/"):
        load_model(path)


def _edit_config(path, edit):
    d = json.loads((path / "config.json").read_text())
    edit(d)
    (path / "config.json").write_text(json.dumps(d))


@pytest.mark.parametrize(
    "edit, msg",
    [
        (lambda d: d["config"].update(base_channels=12), r"do not match config.json.*stored \(3, 3, 1, 8\), config needs \(3, 3, 1, 12\)"),
        (lambda d: d.update(architecture="DiT"), "unknown architecture 'DiT'"),
        (lambda d: d.update(format="something.else"), "not an rbe_jax model config"),
        (lambda d: d.update(version=7), "unsupported model format version 7"),
        (lambda d: d["config"].update(depth=3), "unknown UNetConfig fields"),
        (lambda d: d["noise_schedule"].update(kind="sigmoid"), "unknown noise schedule kind 'sigmoid'"),
        (lambda d: d["noise_schedule"].update(beta_end=-1.0), "betas must be finite"),
        (lambda d: d.update(prediction="noise"), "unknown prediction 'noise'"),
    ],
)
def test_config_problems_are_named(saved, edit, msg):
    _, path = saved
    _edit_config(path, edit)
    with pytest.raises(CheckpointError, match=msg):
        load_model(path)


def test_any_family_and_prediction_round_trips(tmp_path):
    """A model directory records its noise process and prediction; load_denoiser restores the
    network already wrapped with them (here a flow model fed 1000 t, velocity)."""
    m = _random_tiny()
    spec = {"kind": "flow", "time_scale": 1000.0, "t_min": 1e-3, "N": 1000}
    path = save_model(tmp_path / "flow", m, noise_schedule_spec=spec, prediction="velocity", meta={"grid_K": 50})
    info = R.model_info(path)
    assert info.prediction == "velocity" and info.noise_schedule == R.NoiseSchedule.flow(time_scale=1000.0)
    assert info.default_grid == R.NoiseSchedule.flow(time_scale=1000.0).respace(50)
    den = R.load_denoiser(path)
    assert isinstance(den, R.Denoiser) and den.prediction == "velocity" and den.process == info.noise_schedule.process
    noise = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    x = R.rbe_sample(den, noise, R.baseline_schedule(info.noise_schedule, 3, "shift"))
    want = R.rbe_sample(R.as_model(m, prediction="velocity", noise_schedule=info.noise_schedule), noise, R.baseline_schedule(info.noise_schedule, 3, "shift"))
    np.testing.assert_array_equal(x, want)
    with pytest.raises(ValueError, match="prediction must be one of"):
        save_model(tmp_path / "bad", m, noise_schedule_spec=spec, prediction="noise")
    with pytest.raises(ValueError, match="needs a class-conditional model"):
        R.load_denoiser(path, label=3)


def test_restored_arrays_are_uncommitted_unless_a_sharding_is_given(saved):
    _, path = saved
    leaves = jax.tree_util.tree_leaves(nnx.state(R.load_model(path), nnx.Param))
    assert leaves and not any(a.committed for a in leaves)  # jit may place them next to any batch
    dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    leaves = jax.tree_util.tree_leaves(nnx.state(R.load_model(path, sharding=dev), nnx.Param))
    assert all(a.committed and a.sharding == dev for a in leaves)
    with pytest.raises(TypeError, match="sharding must be a jax.sharding.Sharding"):
        R.load_model(path, sharding="cpu")


def test_import_is_light():
    """`import rbe_jax` loads neither the U-Net, Flax NNX, training, Orbax nor Pillow."""
    import subprocess
    import sys

    code = "import sys, rbe_jax; print(sorted(m for m in ('rbe_jax.zoo.nets', 'rbe_jax.zoo.train', 'flax.nnx', 'optax', 'orbax.checkpoint', 'PIL', 'tqdm', 'diffrax') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_overwrite_refuses_a_directory_that_is_not_a_model(tmp_path):
    """`rbe-jax train --export DIR` onto a user's directory deleted it: now refused, and the
    directory is untouched."""
    m = _random_tiny()
    user = tmp_path / "my_project"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an rbe_jax model directory"):
        save_model(user, m, noise_schedule_spec=SPEC, overwrite=True)
    assert (user / "notes.txt").read_text() == "mine" and sorted(p.name for p in user.iterdir()) == ["notes.txt"]


def test_overwrite_replaces_an_export_and_leaves_nothing_beside_it(saved):
    m, path = saved
    before = sorted(p.name for p in path.parent.iterdir())
    save_model(path, m, noise_schedule_spec=SPEC, overwrite=True)
    assert sorted(p.name for p in path.parent.iterdir()) == before  # no temporary or old copy left
    load_model(path)
