import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rbe_jax as R


@pytest.fixture(scope="module")
def calib_noise():
    return jax.random.normal(jax.random.key(7), (128, 8), jnp.float32)


def test_schedule_from_paths_is_the_reference_rule():
    paths = np.array(
        [
            [9, 5, 2, -1, -1, -1],  # 3 steps
            [9, 6, 3, -1, -1, -1],  # 3 steps
            [9, 4, -1, -1, -1, -1],  # 2 steps
            [9, 7, 4, 1, -1, -1],  # 4 steps
            [9, 6, 2, -1, -1, -1],  # 3 steps
        ]
    )
    # mean of the 3-step paths: [9, 17/3, 7/3, -1] -> rounded half up
    assert R.rbe.schedule_from_paths(paths, 3).tolist() == [9, 6, 2, -1]
    assert R.rbe.schedule_from_paths(paths, 2).tolist() == [9, 4, -1]
    with pytest.raises(ValueError, match="exactly nfe=5"):
        R.rbe.schedule_from_paths(paths, 5)
    # half-way means round up, keeping the path strictly decreasing
    assert R.rbe.schedule_from_paths(np.array([[9, 3, 2, -1], [9, 2, 1, -1]]), 3).tolist() == [9, 3, 2, -1]


def test_resampled_aggregation():
    paths = np.array([[9, 5, -1, -1, -1], [9, 7, 4, 1, -1]])
    idx = R.rbe.resampled_schedule_from_paths(paths, 4, K=10)
    # path A at u=0,.25,.5,.75,1 -> 9,7,5,2,-1 ; path B -> 9,7,4,1,-1 ; mean rounded half up
    assert idx.tolist() == [9, 7, 5, 2, -1]


@pytest.mark.parametrize("nfe", [5, 8, 10, 15, 20])
def test_calibrate_hits_nfe_exactly(mixture, grid, calib_noise, nfe):
    s = R.calibrate(mixture, grid, calib_noise, nfe)
    assert s.nfe == nfe and s.method == "rbe" and s.tau > 0
    s.validate(grid)
    info = s.info
    assert info["aggregation"] == "exact" and info["samples_used"] >= 128 / 20
    assert info["nfe_histogram"][str(nfe)] == info["samples_used"]
    assert info["calibration_evals"] >= nfe and info["search_runs"] >= 1
    # re-running the adaptive rule at the reported tau reproduces the schedule
    res = R.adaptive_paths(mixture, grid, calib_noise, s.tau, max_steps=2 * nfe + 2)
    np.testing.assert_array_equal(R.rbe.schedule_from_paths(res.paths, nfe), s.indices)


def test_calibrate_with_fixed_tau(mixture, grid, calib_noise):
    res = R.adaptive_paths(mixture, grid, calib_noise, 0.3)
    m = int(np.bincount(np.asarray(res.nfe)).argmax())
    s = R.calibrate(mixture, grid, calib_noise, m, tau=0.3)
    assert s.tau == 0.3 and s.info["search_runs"] == 0
    np.testing.assert_array_equal(s.indices, R.rbe.schedule_from_paths(res.paths, m))


def test_calibrate_falls_back_to_resampling(mixture, linear, calib_noise):
    # on a 12-point grid, 10 steps is hit by too few samples at any tau: resample paths
    g = linear.respace(12)
    s = R.calibrate(mixture, g, calib_noise, 10, min_samples=129)
    assert s.nfe == 10 and s.info["aggregation"] == "resampled"
    s.validate(g)


def test_calibrate_nfe_one(mixture, grid, calib_noise):
    s = R.calibrate(mixture, grid, calib_noise, 1)
    assert s.indices.tolist() == [99, -1]


def test_calibrate_bad_input(mixture, grid, calib_noise):
    for nfe in (0, 100, -3):
        with pytest.raises(ValueError, match="nfe"):
            R.calibrate(mixture, grid, calib_noise, nfe)
    with pytest.raises(ValueError, match="tau"):
        R.calibrate(mixture, grid, calib_noise, 5, tau=-1.0)
    with pytest.raises(TypeError, match="incompatible shapes"):  # the model's own error
        R.calibrate(mixture, grid, calib_noise[:, :3], 5)


def test_calibrate_reports_nan_from_the_model(mixture, grid, calib_noise):
    def broken(x, t):
        eps = mixture(x, t)
        return jnp.where((t < 300)[:, None], jnp.nan, eps)  # NaN below training timestep 300

    with pytest.raises(FloatingPointError, match=r"NaN/Inf during calibration.*grid index \d+ \(model time ([\d.]+)\)") as e:
        R.calibrate(broken, grid, calib_noise, 8)
    t = float(str(e.value).split("model time ")[1].split(")")[0])
    assert t < 300


def test_chunked_calibration_gives_the_same_schedule(mixture, grid, calib_noise):
    a = R.calibrate(mixture, grid, calib_noise, 8)
    b = R.calibrate(mixture, grid, calib_noise, 8, chunk_size=50)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert a.tau == b.tau


def test_nan_gradient_is_caught_not_taken_as_finished(mixture, grid, calib_noise):
    """eps is finite but its input gradient is NaN below timestep 300: the indicator is NaN,
    which fails the step rule's comparisons; it must be reported, not snapped to clean data."""

    @jax.custom_vjp
    def nan_grad(x):
        return x

    # NaN wherever a cotangent arrives (jnp.where sends zeros to the unselected rows)
    nan_grad.defvjp(lambda x: (x, None), lambda _, g: (jnp.where(g != 0, jnp.nan, g),))

    def model(x, t):
        eps = mixture(x, t)
        return jnp.where((t < 300)[:, None], nan_grad(eps), eps)

    sched = R.baseline_schedule(grid, 8, "uniform")
    assert np.all(np.isfinite(np.asarray(R.rbe_sample(model, calib_noise, sched))))  # eps itself is fine
    res = R.adaptive_paths(model, grid, calib_noise[:16], 0.3)
    assert np.all(np.asarray(res.nonfinite_step) >= 0)
    assert np.all(np.asarray(grid.timesteps)[np.asarray(res.nonfinite_index)] < 300)
    with pytest.raises(FloatingPointError, match=r"NaN/Inf during calibration.*model time ([\d.]+)\)") as e:
        R.calibrate(model, grid, calib_noise, 8)
    assert float(str(e.value).split("model time ")[1].split(")")[0]) < 300


def test_calibrate_traces_the_model_at_most_twice_and_compiles_once(mixture, grid, calib_noise):
    """The search (sub-batch) and the final run (whole batch) are the two shapes; the step
    cap and tau are traced values, so other NFEs and a second call reuse the compilation."""
    traces = []

    def model(x, t):
        traces.append(x.shape)  # trace time only
        return mixture(x, t)

    m = R.as_model(model)
    R.calibrate(m, grid, calib_noise, 8)
    assert len(traces) <= 2, traces
    n = len(traces)
    for nfe in (5, 12):
        R.calibrate(m, grid, calib_noise, nfe)
    R.calibrate(m, grid, calib_noise, 6, tau=0.5)
    assert len(traces) == n, traces


def test_calibrate_progress_bar_and_callback(mixture, grid, calib_noise, capsys):
    seen = []
    s = R.calibrate(mixture, grid, calib_noise, 8, progress=seen.append)
    assert len(seen) == s.info["search_runs"] + 1 and {"tau", "mean_nfe", "exact"} <= set(seen[0])
    R.calibrate(mixture, grid, calib_noise, 8, progress=True)
    err = capsys.readouterr().err
    runs = s.info["search_runs"] + 1
    assert f"{runs}/{runs}" in err and "calibrating RBE, nfe=8" in err
