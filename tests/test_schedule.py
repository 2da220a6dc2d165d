import json

import jax

import numpy as np
import pytest

import rbe_jax as R
from rbe_jax.schedule import ScheduleError, strictly_decreasing_path


@pytest.mark.parametrize("kind", sorted(R.BASELINES))
@pytest.mark.parametrize("nfe", [1, 2, 5, 10, 20, 99, 100])
def test_baselines_are_valid_paths(grid, kind, nfe):
    s = R.baseline_schedule(grid, nfe, kind)
    idx = np.asarray(s.indices)
    assert s.nfe == nfe and idx.size == nfe + 1
    assert idx[0] == grid.K - 1 and idx[-1] == -1
    assert np.all(np.diff(idx) < 0)
    np.testing.assert_array_equal(s.alpha_bar, grid.alpha_bar_ext[idx + 1])
    np.testing.assert_array_equal(s.timesteps[:-1], grid.timesteps[idx[:-1]])
    assert s.method == kind
    s.validate(grid)


def test_baseline_shapes(grid):
    assert R.baseline_schedule(grid, 10, "uniform").indices.tolist() == [99, 89, 79, 69, 59, 50, 40, 30, 20, 10, -1]
    q = np.asarray(R.baseline_schedule(grid, 10, "quadratic").indices)
    assert np.all(np.diff(q)[1:] >= np.diff(q)[:-1])  # steps shrink toward the data
    lam = grid.log_snr
    lg = np.asarray(R.baseline_schedule(grid, 10, "logsnr").indices)[:-1]
    dl = np.diff(lam[lg])
    assert dl.std() / dl.mean() < 0.25  # nearly even in half-log-SNR (up to grid snapping)


def test_rounding_keeps_paths_strictly_decreasing():
    assert strictly_decreasing_path(np.array([9.0, 2.5, 1.5, 0.2, -1.0]), 10).tolist() == [9, 3, 2, 0, -1]
    assert strictly_decreasing_path(np.array([4.0, 0.1, 0.0, 0.0, -1.0]), 5).tolist() == [4, 2, 1, 0, -1]


def test_json_round_trip(tmp_path, grid):
    s = R.Schedule.from_indices(grid, [99, 40, 12, 3, -1], method="rbe", tau=0.25, info={"samples_used": 7})
    p = s.save(tmp_path / "s.json")
    d = json.loads(p.read_text())
    assert d["indices"] == [99, 40, 12, 3, -1] and d["nfe"] == 4 and d["tau"] == 0.25
    t = R.Schedule.load(p, grid)
    for f in ("indices", "timesteps", "alpha_bar"):
        np.testing.assert_array_equal(getattr(t, f), getattr(s, f))
    assert t.method == "rbe" and t.tau == 0.25 and t.info == {"samples_used": 7}
    assert not list(tmp_path.glob("*.tmp"))


def test_load_errors(tmp_path, grid, linear):
    s = R.baseline_schedule(grid, 5, "uniform")
    p = s.save(tmp_path / "s.json")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        R.Schedule.load(tmp_path / "missing.json")
    p.write_text(p.read_text()[:40])
    with pytest.raises(ScheduleError, match="not valid JSON"):
        R.Schedule.load(p)
    p.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ScheduleError, match="not an rbe_jax schedule"):
        R.Schedule.load(p)
    d = s.to_dict()
    d["indices"] = [99, 50, 60, 10, -1, -1][: len(d["indices"])]
    p.write_text(json.dumps(d))
    with pytest.raises(ScheduleError, match="strictly decreasing"):
        R.Schedule.load(p)
    s.save(p)
    with pytest.raises(ScheduleError, match="made for grid"):
        R.Schedule.load(p, linear.respace(50))
    with pytest.raises(ScheduleError, match="made for grid"):
        R.Schedule.load(p, R.NoiseSchedule.cosine(1000).respace(100))
    d = s.to_dict()
    d["alpha_bar"][1] *= 1.001  # still increasing, but not the grid's value
    p.write_text(json.dumps(d))
    with pytest.raises(ScheduleError, match="alpha_bar does not match the grid"):
        R.Schedule.load(p, grid)


@pytest.mark.parametrize(
    "indices, msg",
    [([99, 50, 50, -1], "strictly decreasing"), ([99, 20, 0], "end at clean data"), ([120, 3, -1], r"\[-1, 99\]"), ([-1], "at least one step")],
)
def test_bad_indices(grid, indices, msg):
    with pytest.raises(ScheduleError, match=msg):
        R.Schedule.from_indices(grid, indices)


@pytest.mark.parametrize("nfe, err", [(0, ValueError), (101, ValueError), (2.5, TypeError)])
def test_bad_nfe(grid, nfe, err):
    with pytest.raises(err, match="nfe"):
        R.baseline_schedule(grid, nfe, "uniform")


def test_unknown_kind(grid):
    with pytest.raises(ValueError, match="unknown baseline"):
        R.baseline_schedule(grid, 5, "cosine")


def test_schedule_is_immutable(grid):
    s = R.baseline_schedule(grid, 5, "uniform")
    with pytest.raises(AttributeError):
        s.indices = None


def test_schedule_equality_is_real_but_never_keys_jit(grid, mixture, noise8):
    a, b = R.baseline_schedule(grid, 6, "uniform"), R.baseline_schedule(grid, 6, "uniform")
    q = R.baseline_schedule(grid, 6, "quadratic")
    assert a == b and a.meta == b.meta and a != q and a.meta != q.meta
    relabelled = R.Schedule.from_indices(grid, a.indices, method="custom", info={"note": "same steps"})
    assert relabelled != a and relabelled.meta.info == {"note": "same steps"}
    moved = jax.tree_util.tree_map(lambda v: v, relabelled)  # metadata travels with the pytree
    assert moved.meta == relabelled.meta
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(q)  # one jit cache entry


def test_written_files_get_the_usual_permissions(grid, tmp_path):
    """Files go through a temporary sibling (``mkstemp``, owner-only); the result must have
    the mode a normally created file gets (0o666 less the umask), like ``open()``."""
    import os

    old = os.umask(0o022)
    try:
        path = R.baseline_schedule(grid, 5, "uniform").save(tmp_path / "s.json")
        assert (path.stat().st_mode & 0o777) == 0o644
        os.umask(0o077)
        path = R.baseline_schedule(grid, 5, "uniform").save(tmp_path / "t.json")
        assert (path.stat().st_mode & 0o777) == 0o600
    finally:
        os.umask(old)
