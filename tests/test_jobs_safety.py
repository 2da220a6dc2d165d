"""Sampling jobs and CLI outputs: one job per directory, the model identified by its
parameters, output paths probed by a real write, and an interrupt that exits 130."""

import os

import pytest

import rbe_jax as R
from rbe_jax.app import cli
from rbe_jax.app.jobs import JobError, _lock, model_fingerprint, sample_job

NS = R.NoiseSchedule.linear(1000)


def _model(shift=0.0):
    gm = R.testing.GaussianMixture.random(0, 4, 3, R.NoiseSchedule.vp_continuous()).as_family(NS, "eps")
    return gm.replace(means=gm.means + shift).denoiser


def test_a_model_with_other_parameters_is_another_job(tmp_path):
    s = R.baseline_schedule(NS, 4)
    a = sample_job(_model(), s, 8, 4, tmp_path, image_shape=(4,))
    assert model_fingerprint(R.core.models.prepare_model(_model())) == a["model_fingerprint"]
    with pytest.raises(JobError, match="model_fingerprint"):  # same structure, same (empty) model_id
        sample_job(_model(0.5), s, 8, 4, tmp_path, image_shape=(4,))
    again = sample_job(_model(), s, 8, 4, tmp_path, image_shape=(4,))  # the same model resumes
    assert again == a


def test_a_second_job_on_a_locked_directory_is_refused_and_tampering_is_caught(tmp_path):
    s = R.baseline_schedule(NS, 4)
    with _lock(tmp_path):  # as a running job holds it (flock is per open file, so this test can take it)
        with pytest.raises(JobError, match="another sampling job"):
            sample_job(_model(), s, 8, 4, tmp_path, image_shape=(4,))
    # a shard replaced while the job runs (as a second writer would) fails the final check
    def clobber(i):
        if i == 1:
            (tmp_path / "shard_00000.npz").write_bytes(b"other job")

    with pytest.raises(JobError, match="do not match"):
        sample_job(_model(), s, 8, 4, tmp_path, image_shape=(4,), on_shard=clobber)


def test_output_paths_are_probed_by_a_write_before_any_model_call(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cli, "_load", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(AssertionError("model loaded")))
    assert cli.main(["sample", "--out", "/proc/x.png"]) == 2
    assert "/proc" in capsys.readouterr().err and not calls
    assert cli.main(["sample", "--out-dir", "/proc/rbe_jax_job"]) == 2
    assert "--out-dir" in capsys.readouterr().err and not calls
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep")
    assert cli.main(["train", "--steps", "1", "--workdir", str(tmp_path / "w"), "--export", str(user)]) == 2  # refused before training
    assert "not an rbe_jax model directory" in capsys.readouterr().err and (user / "notes.txt").read_text() == "keep"
    if os.geteuid() != 0:  # root writes into a read-only directory anyway
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        assert cli.main(["sample", "--out-dir", str(ro)]) == 2 and not calls


def test_the_console_script_exits_130_on_an_interrupt_without_finalizing(monkeypatch):
    monkeypatch.setattr(cli, "main", lambda argv=None: 130)
    exits = []
    monkeypatch.setattr(os, "_exit", lambda rc: exits.append(rc))  # the real one would end pytest
    with pytest.raises(SystemExit):
        cli.console_main()
    assert exits == [130]
    monkeypatch.setattr(cli, "main", lambda argv=None: 0)
    with pytest.raises(SystemExit) as e:
        cli.console_main()
    assert e.value.code == 0 and exits == [130]
