"""optimize_schedule: never worse than its best start on the calibration batch, valid
schedules on the given grid, provenance recorded, candidates mapped by training timestep."""

import jax
import numpy as np
import pytest

import rbe_jax as R

VP_KINDS = [k for k in R.BASELINES if k != "shift"]  # the spacings that apply to a VP table


@pytest.fixture(scope="module")
def setup(linear, mixture):
    noise = jax.random.normal(jax.random.key(4), (64, 8))
    ref = R.reference_solution(mixture, linear, noise, 1000)
    return mixture, linear, noise, ref


@pytest.mark.parametrize("solver", ["unipc", "dpmpp2m"])
def test_never_worse_than_the_best_candidate(setup, solver):
    gm, full, noise, ref = setup
    s = R.optimize_schedule(gm, full, noise, 6, solver, reference=ref, trim=0.0, validation=None)
    assert s.nfe == 6 and s.method == "optimized" and s.meta.K == 1000
    s.validate(full)
    i = s.info
    assert i["solver"] == solver and i["start"] in i["candidates"]
    assert set(i["candidates"]) == {"uniform", "quadratic", "logsnr", "karras", "power1.5", "power2.5", "power3", "local_dp"}
    assert i["start_rmse"] == min(i["candidates"].values())
    assert i["rmse"] <= i["start_rmse"] and i["rmse"] < 0.99 * i["start_rmse"]  # the refinement helps here
    assert i["rmse"] == pytest.approx(R.schedule_error(gm, noise, ref, s, solver), rel=1e-6)
    for kind in VP_KINDS:
        assert i["rmse"] <= R.schedule_error(gm, noise, ref, R.baseline_schedule(full, 6, kind), solver)
    assert i["model_evals"] >= 5 * 6 * 64 and i["seconds"] > 0


def test_rbe_schedule_as_an_extra_candidate_and_json(setup, grid, tmp_path):
    gm, full, noise, ref = setup
    rbe = R.calibrate(gm, grid, noise, 5)
    local = R.calibrate(gm, grid, noise, 5, rule="local_error")
    fine = R.calibrate(gm, full, noise, 5)
    extras = [rbe, local, fine, rbe]
    s = R.optimize_schedule(gm, full, noise, 5, "dpmpp2m", reference=ref, candidates=("uniform",), powers=(), extra_candidates=extras, local_dp=False, max_sweeps=1, validation=None)
    names = ["rbe/backward_error/K=100", "rbe/local_error/K=100", "rbe/backward_error/K=1000", "rbe/backward_error/K=100#4"]
    assert set(s.info["candidates"]) == {"uniform", *names}  # every start kept, under its own name
    for name, sched in zip(names, extras):
        assert s.info["candidates"][name] == pytest.approx(R.schedule_error(gm, noise, ref, sched, "dpmpp2m", trim=s.info["trim"]), rel=1e-6)
    back = R.Schedule.load(s.save(tmp_path / "opt.json"), full)
    assert back == s and back.info["solver"] == "dpmpp2m"


def test_trimmed_objective_keeps_the_untrimmed_error_capped(setup):
    gm, full, noise, ref = setup
    s = R.optimize_schedule(gm, full, noise, 6, "unipc", reference=ref, trim=0.05, full_rmse_cap=1.02, max_sweeps=1, validation=None)
    i = s.info
    assert i["trim"] == 0.05 and i["full_rmse_cap"] == 1.02
    assert i["rmse"] == pytest.approx(R.schedule_error(gm, noise, ref, s, "unipc", trim=0.05), rel=1e-6)
    assert i["full_rmse"] == pytest.approx(R.schedule_error(gm, noise, ref, s, "unipc"), rel=1e-6)
    assert i["rmse"] < i["full_rmse"]  # the worst 5% carry a share of the error
    untrimmed = [R.schedule_error(gm, noise, ref, R.baseline_schedule(full, 6, k), "unipc") for k in VP_KINDS]
    assert i["full_rmse"] <= 1.02 * min(untrimmed) * (1 + 1e-6)


def test_validation_part_is_held_out_and_guards_the_result(setup):
    """With a held-out part the search sees only the rest, and what it returns is no worse
    there than the best start (by RMSE) in RMSE and median per-sample error."""
    from rbe_jax.tuning.teacher import Teacher

    gm, full, noise, ref = setup
    s = R.optimize_schedule(gm, full, noise, 6, "dpmpp2m", reference=ref, validation=16, max_sweeps=1)
    i = s.info
    assert i["batch"] == 48 and i["held_out_samples"] == 16
    held = Teacher(noise[48:], ref[48:], 0, 0, 0.0)
    assert R.schedule_stats(gm, s, "dpmpp2m", held).as_dict() == pytest.approx(i["held_out"], rel=1e-5)
    best = i["guard_reference"]
    assert best in i["held_out_candidates"]
    assert i["held_out"]["rmse"] <= i["held_out_candidates"][best]["rmse"]
    assert i["held_out"]["median"] <= i["held_out_candidates"][best]["median"]
    assert i["selected"] == "optimized" or i["held_out"] == i["held_out_candidates"][i["selected"]]
    # the search never saw the held-out samples: the same search on the first 48 alone agrees
    alone = R.optimize_schedule(gm, full, noise[:48], 6, "dpmpp2m", reference=ref[:48], validation=None, max_sweeps=1)
    if i["selected"] == "optimized":
        np.testing.assert_array_equal(alone.indices, s.indices)
    with pytest.raises(ValueError, match="validation"):
        R.optimize_schedule(gm, full, noise, 4, reference=ref, validation=0)


def test_reference_is_accurate_on_the_mixture(setup):
    pytest.importorskip("diffrax")
    gm, full, noise, ref = setup
    with jax.enable_x64(True):
        exact = R.testing.reference_ode_solution(gm.eps_at, np.asarray(noise[:8], np.float64), float(full.alpha_bar[-1]))
    assert float(np.sqrt(np.mean((np.asarray(ref[:8]) - exact) ** 2))) < 2e-3


def test_bad_arguments(setup):
    gm, full, noise, ref = setup
    with pytest.raises(ValueError, match="unknown candidate"):
        R.optimize_schedule(gm, full, noise, 4, reference=ref, candidates=("cosine",))
    with pytest.raises(ValueError, match="reference has shape"):
        R.optimize_schedule(gm, full, noise, 4, reference=ref[:3])
    with pytest.raises(ValueError, match="nfe"):
        R.optimize_schedule(gm, full, noise, 0, reference=ref)
    with pytest.raises(ValueError, match="trim"):
        R.optimize_schedule(gm, full, noise, 4, reference=ref, trim=0.7)
    with pytest.raises(ValueError, match="full_rmse_cap"):
        R.optimize_schedule(gm, full, noise, 4, reference=ref, full_rmse_cap=0.9)
    with pytest.raises(ValueError, match="not on the grid"):
        R.optimize_schedule(gm, full.respace(50), noise, 5, reference=ref, extra_candidates=[R.baseline_schedule(full.respace(70), 5, "uniform")])


def test_baselines_snapped_to_the_grid_as_starts(grid):
    """The continuous baselines start the discrete search from their nearest grid points."""
    from rbe_jax.core.schedule import grid_indices

    s = R.baseline_schedule(grid, 10, "karras")
    idx = grid_indices(grid, s.lam)
    assert idx[0] == grid.K - 1 and idx[-1] == -1 and np.all(np.diff(idx) < 0)
    lam = np.asarray(s.lam)[1:-1]
    spacing = np.abs(np.diff(grid.log_snr)).max()
    assert np.all(np.abs(grid.log_snr[idx[1:-1]] - lam) <= spacing)


def test_schedule_error_defaults_to_the_default_solver(mixture, grid, noise8):
    sched = R.baseline_schedule(grid, 4, "logsnr")
    ref = R.rbe_sample(mixture, noise8, R.baseline_schedule(grid, 40, "logsnr"))
    assert R.schedule_error(mixture, noise8, ref, sched) == R.schedule_error(mixture, noise8, ref, sched, R.DEFAULT_SOLVER)
