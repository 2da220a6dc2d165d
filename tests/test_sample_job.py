import json

import jax
import numpy as np
import pytest

import rbe_jax as R
from rbe_jax.app.jobs import JobError, sample_job
from rbe_jax.app.cli import main


@pytest.fixture(scope="module")
def setup(linear):
    gm = R.testing.GaussianMixture.random(0, 4, 3, linear)
    return gm, R.baseline_schedule(linear.respace(50), 6, "logsnr")


def _files(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_job_writes_shards_and_manifest(tmp_path, setup):
    gm, sched = setup
    m = sample_job(gm, sched, 10, 4, tmp_path, image_shape=(4,), seed=3, progress=False)
    assert m["num_shards"] == 3 and [v["count"] for v in m["shards"].values()] == [4, 4, 2]
    x = np.concatenate([np.load(tmp_path / f"shard_{i:05d}.npz")["samples"] for i in range(3)])
    assert x.shape == (10, 4)
    idx = np.concatenate([np.load(tmp_path / f"shard_{i:05d}.npz")["index"] for i in range(3)])
    assert idx.tolist() == list(range(10))
    # shard i is fold_in(key(seed), i) noise through rbe_sample
    noise = jax.random.normal(jax.random.fold_in(jax.random.key(3), 1), (4, 4))
    np.testing.assert_allclose(x[4:8], np.asarray(jax.jit(R.rbe_sample)(gm, noise, sched)), rtol=1e-6)
    assert json.loads((tmp_path / "manifest.json").read_text())["schedule"]["indices"] == np.asarray(sched.indices).tolist()


def test_interrupted_job_resumes_to_identical_files(tmp_path, setup):
    gm, sched = setup
    sample_job(gm, sched, 10, 4, tmp_path / "full", image_shape=(4,), progress=False)
    part = tmp_path / "part"
    sample_job(gm, sched, 10, 4, part, image_shape=(4,), progress=False, stop_after=1)
    assert sorted(p.name for p in part.iterdir()) == [".rbe_jax.lock", "manifest.json", "shard_00000.npz"]  # the lock file stays (empty)
    (part / ".shard_00001.npz.k3x9_q.tmp").write_bytes(b"half a shard")  # killed mid-write (atomic_write's name)
    written = []
    sample_job(gm, sched, 10, 4, part, image_shape=(4,), progress=False, on_shard=written.append)
    assert written == [1, 2]  # shard 0 was not recomputed
    assert _files(part) == _files(tmp_path / "full")
    # a second run recomputes nothing and changes nothing
    written.clear()
    sample_job(gm, sched, 10, 4, part, image_shape=(4,), progress=False, on_shard=written.append)
    assert written == [] and _files(part) == _files(tmp_path / "full")


def test_corrupted_shard_is_recomputed(tmp_path, setup):
    gm, sched = setup
    sample_job(gm, sched, 8, 4, tmp_path, image_shape=(4,), progress=False)
    good = (tmp_path / "shard_00001.npz").read_bytes()
    (tmp_path / "shard_00001.npz").write_bytes(good[:50])
    written = []
    sample_job(gm, sched, 8, 4, tmp_path, image_shape=(4,), progress=False, on_shard=written.append)
    assert written == [1] and (tmp_path / "shard_00001.npz").read_bytes() == good


def test_other_job_in_the_same_directory_is_refused(tmp_path, setup):
    gm, sched = setup
    sample_job(gm, sched, 8, 4, tmp_path, image_shape=(4,), progress=False)
    with pytest.raises(JobError, match="another sampling job"):
        sample_job(gm, sched, 8, 4, tmp_path, image_shape=(4,), seed=1, progress=False)


def test_cli_sampling_job(tmp_path, tiny_dir, capsys):
    out = tmp_path / "job"
    args = ["sample", "--checkpoint", str(tiny_dir), "--nfe", "3", "--schedule", "uniform", "--n", "5", "--batch", "2", "--out-dir", str(out)]
    assert main(args) == 0
    assert "5/5 samples in 3/3 shards; 3 computed now, 0 already done" in capsys.readouterr().out
    first = _files(out)
    assert main(args) == 0 and _files(out) == first
    assert "3 shards; 0 computed now, 3 already done and checked" in capsys.readouterr().out  # a resumed run says it skipped



def test_resume_removes_only_its_own_temporary_files(tmp_path, setup):
    """A user's *.tmp files in the output directory survive; the job's own cut-off writes go."""
    gm, sched = setup
    mine = [tmp_path / "draft.tmp", tmp_path / ".notes.tmp", tmp_path / ".shard_00000.npz.backup.tmp.keep"]
    for f in mine:
        f.write_text("user data")
    ours = [tmp_path / ".shard_00001.npz.ab12_cd.tmp", tmp_path / ".manifest.json.x9y8.tmp"]
    for f in ours:
        f.write_text("cut off")
    sample_job(gm, sched, 8, 4, tmp_path, image_shape=(4,), progress=False)
    assert all(f.read_text() == "user data" for f in mine)
    assert not any(f.exists() for f in ours)
