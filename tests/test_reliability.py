"""Issue 26's remaining items, each a check that failed on the code before the fix: files
that name sizes or parameter files they should not, edited schedule files, the shipped
loader's wrapping, and the family's default spacing."""

import json
import shutil

import numpy as np
import pytest

import rbe_jax as R
from rbe_jax.zoo.checkpoint import pretrained_path


def _copy_model(tmp_path, name="digits"):
    dst = tmp_path / name
    shutil.copytree(pretrained_path(name), dst)
    return dst


def test_a_parameter_file_no_checksum_covers_is_refused(tmp_path):
    d = _copy_model(tmp_path)
    (d / "params" / "extra.bin").write_bytes(b"not listed")
    with pytest.raises(R.CheckpointError, match="no checksum in config.json, e.g. params/extra.bin"):
        R.model_info(d)


def test_a_listed_file_outside_the_model_directory_is_refused(tmp_path):
    d = _copy_model(tmp_path)
    (tmp_path / "outside").write_bytes(b"x")
    cfg = json.loads((d / "config.json").read_text())
    cfg["files"]["../../outside"] = "0" * 64
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(R.CheckpointError, match="lies outside"):
        R.model_info(d)


def test_sizes_read_from_files_are_bounded_before_allocating(tmp_path):
    s = R.baseline_schedule(R.NoiseSchedule.linear(1000), 5, "uniform").to_dict()
    s["grid"]["origin"] = {"kind": "linear", "T": 10**9}
    f = tmp_path / "huge.json"
    f.write_text(json.dumps(s))
    with pytest.raises(R.ScheduleError, match=r"T=1000000000 must be an integer in \[2, 1000000\]"):
        R.Schedule.load(f)
    d = _copy_model(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["config"]["image_size"] = 10**6
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(R.CheckpointError, match="image_size must be an integer in"):
        R.model_info(d)


def test_an_edited_model_times_entry_is_named(tmp_path):
    s = R.baseline_schedule(R.NoiseSchedule.linear(1000), 5, "uniform")
    d = s.to_dict()
    f = tmp_path / "s.json"
    f.write_text(json.dumps(d))
    assert R.Schedule.load(f) == s
    d["model_times"][2] = 123.0
    f.write_text(json.dumps(d))
    with pytest.raises(R.ScheduleError, match=r"'model_times'\[2\] is 123.0, but log_snr\[2\] gives model time"):
        R.Schedule.load(f)


def test_the_shipped_loader_wraps_each_model_with_its_prediction_and_process():
    flow = R.load_pretrained("digits_flow")
    assert isinstance(flow, R.Denoiser) and flow.prediction == "velocity" and flow.noise_schedule.family == "flow"
    assert flow.noise_schedule == R.model_info("digits_flow").noise_schedule
    eps = R.load_pretrained("digits")
    assert eps.prediction == "eps" and eps.noise_schedule == R.model_info("digits").noise_schedule
    teacher = R.make_teacher(flow, None, np.zeros((2, 16, 16, 1), np.float32), 4)  # the process taken from the model
    assert teacher.x.shape == (2, 16, 16, 1) and np.all(np.isfinite(np.asarray(teacher.x)))
    with pytest.raises(ValueError, match="this model carries none"):
        R.make_teacher(lambda x, t: x, None, np.zeros((2, 3), np.float32), 4)


def test_the_default_spacing_follows_the_family():
    assert R.baseline_schedule(R.NoiseSchedule.edm(), 10).method == "karras"
    assert R.baseline_schedule(R.NoiseSchedule.ve(), 10).method == "karras"
    assert R.baseline_schedule(R.NoiseSchedule.linear(), 10).method == "uniform"
    assert R.baseline_schedule(R.NoiseSchedule.flow(), 10).method == "uniform"
    t = R.baseline_schedule(R.NoiseSchedule.flow(), 5, "shift", shift=3.0).model_times
    assert t[-1] == pytest.approx(3 * 0.2 / (1 + 2 * 0.2))  # no call spent at t = 0.003
    ztsnr = R.NoiseSchedule.from_betas(np.append(np.linspace(1e-4, 0.02, 999), 1.0))
    with pytest.raises(ValueError, match=r"use 'uniform' or 'quadratic'\)"):
        R.baseline_schedule(ztsnr, 5, "logsnr")
