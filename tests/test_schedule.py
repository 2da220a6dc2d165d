import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rbe_jax as R
from rbe_jax.core.schedule import ScheduleError, strictly_decreasing_path


FAMILIES = {
    "linear": R.NoiseSchedule.linear(1000),
    "cosine": R.NoiseSchedule.cosine(1000),
    "vp": R.NoiseSchedule.vp_continuous(),
    "ve": R.NoiseSchedule.ve(0.01, 50.0),
    "edm": R.NoiseSchedule.edm(),
    "flow": R.NoiseSchedule.flow(time_scale=1000.0),
}


def _applies(ns, kind):
    if kind == "shift":
        return ns.family == "flow"
    return not (kind in ("logsnr", "karras") and np.isneginf(ns.lam_range[0]))


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("kind", sorted(R.BASELINES))
@pytest.mark.parametrize("nfe", [1, 2, 5, 20, 1000])
def test_baselines_are_valid_continuous_schedules(family, kind, nfe):
    ns = FAMILIES[family]
    if not _applies(ns, kind):
        with pytest.raises(ValueError, match="spacing"):
            R.baseline_schedule(ns, nfe, kind)
        return
    s = R.baseline_schedule(ns, nfe, kind)
    lam = np.asarray(s.lam)
    lo, hi = ns.lam_range
    assert s.nfe == nfe and lam.size == nfe + 1 and s.method == kind and s.indices is None
    assert np.isposinf(lam[-1]) and np.all(np.diff(lam) > 0)
    assert lam[0] == pytest.approx(lo) if kind != "shift" else np.isneginf(lam[0])
    assert np.all(lam[:-1] <= hi + 1e-9)
    if kind == "karras" and nfe > 1:
        assert lam[-2] == pytest.approx(hi)  # both ends included, then clean data
    s.validate(ns)
    s.validate(ns.respace(100))  # any grid of the process


def test_baselines_are_placed_in_the_models_own_time():
    ns = R.NoiseSchedule.linear(1000)
    np.testing.assert_allclose(R.baseline_schedule(ns, 10, "uniform").model_times, 999 * (1 - np.arange(10) / 10), rtol=1e-9)
    np.testing.assert_allclose(R.baseline_schedule(ns, 10, "quadratic").model_times, 999 * (1 - np.arange(10) / 10) ** 2, rtol=1e-9, atol=1e-9)
    lam = np.asarray(R.baseline_schedule(ns, 10, "logsnr").lam)[:-1]
    np.testing.assert_allclose(np.diff(lam), (ns.lam_range[1] - ns.lam_range[0]) / 10, rtol=1e-9)
    edm = R.NoiseSchedule.edm()
    sig = R.baseline_schedule(edm, 18, "karras", rho=7.0).model_times  # EDM feeds sigma
    want = (80 ** (1 / 7) + np.arange(18) / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    np.testing.assert_allclose(sig, want, rtol=1e-9)
    flow = R.NoiseSchedule.flow()
    t = R.baseline_schedule(flow, 8, "shift", shift=3.0).model_times
    u = np.linspace(1.0, 1 / 8, 8)
    np.testing.assert_allclose(t, 3 * u / (1 + 2 * u), rtol=1e-9)  # SD3's and Flux's pipelines: linspace(1, 1/n, n), shifted


def test_karras_is_independent_of_how_the_table_is_parametrised():
    """On the cosine table Karras's sigmas are spread as EDM spreads them, not snapped to a
    coarse grid (the integer grid gave timesteps 999, 989, ..., 928, 838, 192)."""
    ns = R.NoiseSchedule.cosine(1000)
    s = R.baseline_schedule(ns, 10, "karras")
    sig = np.exp(-np.asarray(s.lam)[:-1])
    d = np.diff(sig ** (1 / 7))
    np.testing.assert_allclose(d, d[0], rtol=1e-9)
    assert np.all(np.diff(s.model_times) < 0) and s.model_times[-1] == pytest.approx(0.0, abs=1e-6)


def test_from_indices_lies_on_the_grid(grid):
    s = R.Schedule.from_indices(grid, [99, 40, 12, 3, -1], method="rbe", tau=0.25)
    assert s.indices.tolist() == [99, 40, 12, 3, -1] and s.nfe == 4
    np.testing.assert_array_equal(np.asarray(s.lam)[:-1], grid.log_snr[[99, 40, 12, 3]])
    np.testing.assert_array_equal(s.alpha_bar, grid.alpha_bar_ext[[100, 41, 13, 4, 0]])
    np.testing.assert_array_equal(s.model_times, grid.timesteps[[99, 40, 12, 3]])
    s.validate(grid)
    with pytest.raises(ScheduleError, match="made for grid"):
        s.validate(R.NoiseSchedule.linear(1000).respace(50))


def test_from_times_and_from_lambdas():
    edm = R.NoiseSchedule.edm()
    s = R.Schedule.from_times(edm, [80.0, 10.0, 1.0, 0.1])
    np.testing.assert_allclose(s.model_times, [80.0, 10.0, 1.0, 0.1], rtol=1e-12)
    assert np.isposinf(s.lam[-1]) and s.method == "custom"
    with pytest.raises(ScheduleError, match="range"):
        R.Schedule.from_times(edm, [100.0, 1.0])  # beyond sigma_max
    with pytest.raises(ScheduleError, match="strictly increasing"):
        R.Schedule.from_lambdas(edm, [0.0, -1.0, np.inf])
    with pytest.raises(ScheduleError, match="end at clean data"):
        R.Schedule.from_lambdas(edm, [0.0, 1.0])
    with pytest.raises(ScheduleError, match="NaN"):
        R.Schedule.from_lambdas(edm, [0.0, np.nan, np.inf])
    with pytest.raises(ScheduleError, match="range"):
        R.Schedule.from_lambdas(edm, [-np.inf, 1.0, np.inf])  # EDM does not reach pure noise
    R.Schedule.from_lambdas(R.NoiseSchedule.flow(), [-np.inf, 1.0, np.inf])  # flow does


def test_rounding_keeps_paths_strictly_decreasing():
    assert strictly_decreasing_path(np.array([9.0, 2.5, 1.5, 0.2, -1.0]), 10).tolist() == [9, 3, 2, 0, -1]
    assert strictly_decreasing_path(np.array([4.0, 0.1, 0.0, 0.0, -1.0]), 5).tolist() == [4, 2, 1, 0, -1]


def test_json_round_trip(tmp_path, grid):
    s = R.Schedule.from_indices(grid, [99, 40, 12, 3, -1], method="rbe", tau=0.25, info={"samples_used": 7})
    p = s.save(tmp_path / "s.json")
    d = json.loads(p.read_text())
    assert d["version"] == 2 and d["indices"] == [99, 40, 12, 3, -1] and d["nfe"] == 4 and d["tau"] == 0.25
    assert d["log_snr"][-1] == "inf" and d["grid"]["origin"] == {"kind": "linear", "T": 1000, "beta_start": 1e-4, "beta_end": 0.02, "K": 100}
    for t in (R.Schedule.load(p, grid), R.Schedule.load(p)):  # the grid is rebuilt from its origin
        assert t == s and t.meta == s.meta
        assert t.method == "rbe" and t.tau == 0.25 and t.info == {"samples_used": 7}
    assert not list(tmp_path.glob("*.tmp"))
    for ns in (R.NoiseSchedule.flow(time_scale=1000.0), R.NoiseSchedule.edm(), R.NoiseSchedule.ve().respace(100)):
        c = R.baseline_schedule(ns, 6, "uniform")
        back = R.Schedule.load(c.save(tmp_path / "c.json"))
        assert back == c and back.noise_schedule == ns


def test_version_one_files_still_load(tmp_path, grid, linear):
    """The shipped schedule files were written by the integer-grid core (version 1): they
    load, with the grid given or found later, and sample as before."""
    from rbe_jax.zoo.checkpoint import pretrained_path

    f = pretrained_path("digits") / "schedules" / "rbe_nfe10.json"
    assert json.loads(f.read_text())["version"] == 1
    bare = R.Schedule.load(f)
    assert bare.nfe == 10 and bare.meta.noise_schedule is None
    with pytest.raises(ScheduleError, match="loaded without its noise schedule"):
        bare.noise_schedule
    s = R.Schedule.load(f, grid)
    assert s == bare.on(grid) and s.indices.tolist() == json.loads(f.read_text())["indices"]
    np.testing.assert_array_equal(np.asarray(s.lam)[:-1], grid.log_snr[s.indices[:-1]])
    with pytest.raises(ScheduleError, match="made for grid"):
        R.Schedule.load(f, linear.respace(50))
    d = json.loads(f.read_text())
    d["alpha_bar"][1] *= 1.001  # still increasing, but not the grid's value
    (tmp_path / "v1.json").write_text(json.dumps(d))
    with pytest.raises(ScheduleError, match="alpha_bar does not match the grid"):
        R.Schedule.load(tmp_path / "v1.json", grid)


def test_load_errors(tmp_path, grid, linear):
    s = R.Schedule.from_indices(grid, [99, 60, 30, 10, 2, -1])
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
    d["indices"] = [99, 50, 60, 10, 2, -1]
    p.write_text(json.dumps(d))
    with pytest.raises(ScheduleError, match="strictly decreasing"):
        R.Schedule.load(p)
    d = s.to_dict()
    d["log_snr"][2], d["log_snr"][1] = d["log_snr"][1], d["log_snr"][2]
    p.write_text(json.dumps(d))
    with pytest.raises(ScheduleError, match="strictly increasing"):
        R.Schedule.load(p)
    s.save(p)
    with pytest.raises(ScheduleError, match="made for grid"):
        R.Schedule.load(p, linear.respace(50))
    with pytest.raises(ScheduleError, match="made for grid"):
        R.Schedule.load(p, R.NoiseSchedule.cosine(1000).respace(100))
    c = R.baseline_schedule(linear, 5, "uniform").save(tmp_path / "c.json")
    R.Schedule.load(c, linear.respace(50))  # off the grid: any grid of the process
    with pytest.raises(ScheduleError, match="made for noise process"):
        R.Schedule.load(c, R.NoiseSchedule.cosine(1000))
    d = json.loads(c.read_text())
    d["version"] = 7
    c.write_text(json.dumps(d))
    with pytest.raises(ScheduleError, match="unsupported schedule version 7"):
        R.Schedule.load(c)


@pytest.mark.parametrize(
    "indices, msg",
    [([99, 50, 50, -1], "strictly decreasing"), ([99, 20, 0], "end at clean data"), ([120, 3, -1], r"\[-1, 99\]"), ([-1], "at least one step")],
)
def test_bad_indices(grid, indices, msg):
    with pytest.raises(ScheduleError, match=msg):
        R.Schedule.from_indices(grid, indices)


@pytest.mark.parametrize("nfe, err", [(0, ValueError), (-2, ValueError), (2.5, TypeError)])
def test_bad_nfe(grid, nfe, err):
    with pytest.raises(err, match="nfe"):
        R.baseline_schedule(grid, nfe, "uniform")


def test_unknown_kind(grid):
    with pytest.raises(ValueError, match="unknown baseline"):
        R.baseline_schedule(grid, 5, "cosine")
    with pytest.raises(ValueError, match="rho and shift"):
        R.baseline_schedule(grid, 5, "karras", rho=0.0)


def test_schedule_is_immutable(grid):
    s = R.baseline_schedule(grid, 5, "uniform")
    with pytest.raises(AttributeError):
        s.lam = None


def test_metadata_compares_by_value_and_survives_jit(grid):
    a, b = R.baseline_schedule(grid, 6, "uniform"), R.baseline_schedule(grid, 6, "uniform")
    q = R.baseline_schedule(grid, 6, "quadratic")
    karras = R.baseline_schedule(grid, 6, "karras")
    assert a == b and a.meta == b.meta and a != q and a.meta != q.meta
    relabelled = R.Schedule.from_lambdas(grid, a.lam, method="custom", info={"note": "same steps"})
    assert relabelled != a and relabelled.info == {"note": "same steps"}
    moved = jax.tree_util.tree_map(lambda v: v, relabelled)  # metadata travels with the pytree
    assert moved.meta == relabelled.meta
    ident = jax.jit(lambda s: s)
    assert ident(a).method == "uniform"
    out = ident(karras)  # a schedule of the same length traced before must not lend its metadata
    assert out.method == "karras" and out.meta == karras.meta
    np.testing.assert_allclose(out.lam, karras.lam, rtol=1e-6)  # float32 under jit


def test_gradients_with_respect_to_the_times(mixture, linear, noise8):
    """The times are a float leaf: jax.grad through the sampler is finite, nonzero and
    matches central finite differences."""
    base = R.baseline_schedule(linear, 6, "logsnr")
    target = R.rbe_sample(mixture, noise8, R.baseline_schedule(linear, 40, "logsnr"), R.dpmpp2m())

    def loss(lam_inner):
        lam = jnp.concatenate([jnp.asarray(base.lam[:1]), lam_inner, jnp.asarray([jnp.inf])])
        x = R.rbe_sample(mixture, noise8, R.Schedule.from_lambdas(linear, lam), R.unipc())
        return jnp.mean((x - target) ** 2)

    inner = jnp.asarray(base.lam[1:-1], jnp.float32)
    g = np.asarray(jax.grad(loss)(inner))
    assert np.all(np.isfinite(g)) and np.all(g != 0)
    for i in range(inner.size):
        e = jnp.zeros_like(inner).at[i].set(1e-2)
        fd = (float(loss(inner + e)) - float(loss(inner - e))) / 2e-2
        assert g[i] == pytest.approx(fd, rel=0.1, abs=1e-5), (i, g[i], fd)
    whole = jax.grad(lambda s: jnp.mean(R.rbe_sample(mixture, noise8, s, R.unipc())))(base)
    assert isinstance(whole, R.Schedule) and np.all(np.isfinite(np.asarray(whole.lam)[1:-1]))


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


@pytest.mark.parametrize(
    "ns, times, named",
    [
        (R.NoiseSchedule.linear(1000), [5000.0, 500.0], "time 5000 at index 0 lies outside the model's trained time range [0, 999]"),
        (R.NoiseSchedule.linear(1000), [900.0, -3.0], "time -3 at index 1 lies outside"),
        (R.NoiseSchedule.linear(1000), [np.inf, 500.0], "times must be finite, got inf at index 0"),
        (R.NoiseSchedule.edm(), [120.0, 1.0], "time 120 at index 0 lies outside the model's trained time range [0.002, 80]"),
        (R.NoiseSchedule.flow(), [1.5, 0.5], "time 1.5 at index 0 lies outside"),
    ],
)
def test_from_times_names_a_time_out_of_range(ns, times, named):
    """These were clamped silently (5000 -> 999, -3 -> 0) or reported as NaN."""
    with pytest.raises(ScheduleError, match=named.replace("[", r"\[").replace("]", r"\]")):
        R.Schedule.from_times(ns, times)


def test_a_sigma_array_ending_in_zero_is_a_schedule():
    """k-diffusion's convention: the last sigma 0 is the clean end (was refused with
    divide-by-zero warnings)."""
    edm = R.NoiseSchedule.edm()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = R.Schedule.from_times(edm, [80, 20, 5, 1, 0.2, 0.0])
    assert s.nfe == 5 and np.allclose(s.model_times, [80, 20, 5, 1, 0.2])
    np.testing.assert_array_equal(np.asarray(s.lam), np.asarray(R.Schedule.from_times(edm, [80, 20, 5, 1, 0.2]).lam))


def test_complex_times_are_refused():
    ns = R.NoiseSchedule.edm()
    with pytest.raises(ScheduleError, match="complex"):
        R.Schedule.from_lambdas(ns, np.array([0.0 + 1j, np.inf]))
    with pytest.raises(ScheduleError, match="complex"):
        R.Schedule.from_times(ns, np.array([10.0 + 2j]))


def test_a_deeply_nested_file_is_named(tmp_path):
    f = tmp_path / "deep.json"
    f.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ScheduleError, match="deep.json: JSON nested too deeply"):
        R.Schedule.load(f, R.NoiseSchedule.linear(1000))


@pytest.mark.parametrize("tau", ["NaN", "-1", "Infinity"])
def test_a_schedule_file_with_a_bad_tau_is_refused(tmp_path, tau):
    grid = R.NoiseSchedule.linear(1000).respace(100)
    f = tmp_path / "s.json"
    R.Schedule.from_indices(grid, [99, 50, 10, -1], tau=0.3).save(f)
    f.write_text(f.read_text().replace('"tau": 0.3', f'"tau": {tau}'))
    assert f'"tau": {tau}' in f.read_text()
    with pytest.raises(ScheduleError, match="tau must be a finite number > 0"):
        R.Schedule.load(f, grid)
