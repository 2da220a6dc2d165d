"""learn_schedule and the shared teacher/validation pieces: the ordered parametrisation, the
gradient through the jitted sampler, the held-out guard, every family, clear errors, and the
shipped-schedule default."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rbe_jax as R
from rbe_jax.tuning.learn import _Range, _lam_of, _theta_of
from rbe_jax.tuning.teacher import best_of, error_stats, pick_guarded, split


@pytest.fixture(scope="module")
def taught(linear, mixture):
    noise = jax.random.normal(jax.random.key(11), (256, 8))
    return R.make_teacher(mixture, linear, noise, 1000)


@pytest.mark.parametrize("lo", [-3.0, -np.inf])
def test_every_parameter_value_is_an_ordered_schedule_in_range(lo):
    r = _Range(lo, 5.0)
    rng = np.random.default_rng(0)
    for nfe in (1, 2, 7):
        for _ in range(20):
            theta = rng.normal(0, 3, nfe if np.isfinite(lo) else nfe - 1)
            lam = _lam_of(theta, r, np)
            assert lam.shape == (nfe + 1,) and lam[0] == lo and np.isposinf(lam[-1])
            assert np.all(np.diff(lam) > 0) and np.all(lam[1:-1] < r.hi)
            if nfe > 1 and np.diff(np.append(lam[:-1], r.hi))[1:].min() > 1e-3 * (r.hi - lam[1]):  # no gap widened
                back = _lam_of(_theta_of(lam, r), r, np)
                np.testing.assert_allclose(back[1:-1], lam[1:-1], rtol=1e-9, atol=1e-9)


def test_gradient_through_the_jitted_sampler_matches_finite_differences(linear, mixture, taught):
    r = _Range(*linear.lam_range)
    theta = jnp.asarray(_theta_of(np.asarray(R.baseline_schedule(linear, 5, "quadratic").lam), r), jnp.float32)
    noise, target = taught.noise[:64], taught.x[:64]

    def loss(th):
        s = R.Schedule.from_lambdas(linear, _lam_of(th, r))
        return jnp.mean((R.rbe_sample(mixture, noise, s, R.unipc()) - target) ** 2)

    g = jax.jit(jax.grad(loss))(theta)
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0
    for i in range(theta.shape[0]):
        h = 1e-2
        e = jnp.zeros_like(theta).at[i].set(h)
        fd = (loss(theta + e) - loss(theta - e)) / (2 * h)
        assert float(g[i]) == pytest.approx(float(fd), rel=0.1, abs=1e-4 * float(jnp.abs(g).max()))


@pytest.mark.parametrize("solver", ["unipc", "dpmpp2m"])
def test_learned_schedule_is_guarded_on_the_held_out_part(linear, mixture, taught, solver):
    s = R.learn_schedule(mixture, linear, taught, 6, solver, steps=60, batch_size=64, learning_rate=0.05)
    s.validate(linear)
    i = s.info
    assert s.method == "learned" and s.nfe == 6 and i["solver"] == solver
    assert i["fit_samples"] == 192 and i["held_out_samples"] == 64 and i["teacher_steps"] == 1000
    held = taught.take(slice(192, None))
    assert R.schedule_stats(mixture, s, solver, held).as_dict() == pytest.approx(i["held_out"], rel=1e-5)
    ref = i["candidates"][i["guard_reference"]]
    assert i["guard_reference"] == min(i["candidates"], key=lambda k: R.schedule_stats(mixture, R.baseline_schedule(linear, 6, k), solver, taught).rmse)
    assert i["held_out"]["rmse"] <= ref["rmse"] and i["held_out"]["median"] <= ref["median"]
    assert set(i["candidates"]) == {"uniform", "quadratic", "logsnr", "karras"}
    if i["selected"] == "learned":
        assert 0 < i["best_step"] <= i["steps_taken"] <= 60
    else:  # the guard kept the best fixed candidate
        assert i["held_out"] == ref and i["best_step"] == 0
    if solver == "unipc":  # here learning pays on held-out noise
        assert i["selected"] == "learned" and i["held_out"]["rmse"] < 0.9 * ref["rmse"]
    assert i["history"] and i["model_evals"] > 60 * 6 * 64 and i["seconds"] > 0


def test_no_learning_keeps_the_best_fixed_candidate_and_json(linear, mixture, taught, tmp_path):
    extra = R.optimize_schedule(mixture, linear, taught.noise, 4, "unipc", reference=taught.x, max_sweeps=1)
    s = R.learn_schedule(mixture, linear, taught, 4, "unipc", steps=0, candidates=[extra])
    i = s.info
    assert "optimized" in i["candidates"]
    best = i["guard_reference"]
    assert i["selected"] == best and i["best_step"] == 0
    assert i["held_out"] == i["candidates"][best]
    back = R.Schedule.load(s.save(tmp_path / "l.json"), linear)
    assert back == s and back.info["selected"] == best


def test_a_teacher_is_reused_and_equals_one_made_inside(linear, mixture, taught):
    a = R.learn_schedule(mixture, linear, taught.noise, 3, "unipc", teacher_steps=1000, steps=10)
    b = R.learn_schedule(mixture, linear, taught, 3, "unipc", steps=10)
    np.testing.assert_array_equal(np.asarray(a.lam), np.asarray(b.lam))
    assert b.info["teacher_evals"] == 1000 * 256


def test_learns_from_pure_noise_for_a_flow_model(mixture):
    ns = R.NoiseSchedule.flow(time_scale=1000.0)
    model = mixture.as_family(ns, "velocity").denoiser
    z = jax.random.normal(jax.random.key(3), (128, 8))
    s = R.learn_schedule(model, ns, z, 5, "unipc", steps=30, batch_size=64, learning_rate=0.05)
    lam = np.asarray(s.lam)
    assert np.isneginf(lam[0]) and np.isposinf(lam[-1]) and np.all(np.diff(lam) > 0)
    assert set(s.info["candidates"]) == {"uniform", "quadratic", "shift"}
    assert s.info["held_out"]["rmse"] <= s.info["candidates"][s.info["guard_reference"]]["rmse"]


def test_bad_input_is_named(linear, mixture, taught):
    q = R.as_model(lambda p, x, t: mixture(x, t), None, noise_schedule=linear, quantize=True)
    with pytest.raises(ValueError, match="quantizes its time"):
        R.learn_schedule(q, linear, taught, 4)
    with pytest.raises(ValueError, match="validation"):
        R.learn_schedule(mixture, linear, taught, 4, validation=1.5)
    with pytest.raises(ValueError, match="held-out part need"):
        R.learn_schedule(mixture, linear, taught, 4, validation=256)
    with pytest.raises(ValueError, match="unknown loss"):
        R.learn_schedule(mixture, linear, taught, 4, loss="l1")
    with pytest.raises(ValueError, match="candidates must be Schedules of 4 steps"):
        R.learn_schedule(mixture, linear, taught, 4, candidates=[R.baseline_schedule(linear, 5)])
    with pytest.raises(ValueError, match="ball"):
        R.learn_schedule(mixture, linear, taught, 4, ball=-1.0)
    with pytest.raises(ValueError, match="nfe"):
        R.learn_schedule(mixture, linear, taught, 0)


def test_split_stats_and_guard():
    fit, held = split(10, 0.25)
    assert fit.tolist() == list(range(8)) and held.tolist() == [8, 9]
    assert split(10, 3)[1].tolist() == [7, 8, 9]
    e = np.array([0.1, 0.2, 0.3, 0.4])
    st = error_stats(e)
    assert st.score == pytest.approx(0.25) and st.median == pytest.approx(0.25) and st.rmse == pytest.approx(np.sqrt(np.mean(e**2)))
    assert error_stats([0.1, np.nan]).rmse == np.inf
    fixed = {"a": R.ErrorStats(1.0, 1.0, 1.0), "b": R.ErrorStats(2.0, 0.9, 1.2)}
    assert best_of(fixed) == R.ErrorStats(1.0, 0.9, 1.0)
    assert pick_guarded(R.ErrorStats(0.5, 0.8, 1.1), fixed)[0] is None  # beats b (the best by RMSE) on both
    name, why = pick_guarded(R.ErrorStats(0.5, 0.95, 0.5), fixed)
    assert name == "b" and "rmse" in why
    # with per-sample errors, a win that a few samples decide is not taken
    ref = np.random.default_rng(1).exponential(1.0, 64)
    fixed = {"q": error_stats(ref)}
    assert pick_guarded(error_stats(0.9 * ref), fixed)[0] is None  # every sample better
    noisy = ref * np.random.default_rng(0).uniform(0.6, 1.3, 64)
    st = error_stats(noisy)
    assert st.rmse <= fixed["q"].rmse and st.median <= fixed["q"].median  # better on the whole part...
    name, why = pick_guarded(st, fixed)
    assert name == "q" and "resamples" in why  # ...but not surely


def test_pretrained_schedule_prefers_learned_then_optimized_then_rbe(tmp_path):
    from rbe_jax.zoo.checkpoint import pretrained_path

    s = R.pretrained_schedule("digits", 10, "unipc")
    assert s.method in ("learned", "optimized") and s.nfe == 10
    assert R.pretrained_schedule("digits", 8, "ddim").method == "rbe"
    assert R.pretrained_schedule("digits_cond", 10, "unipc", guidance=2.0).nfe == 10
    with pytest.raises(FileNotFoundError, match="nfe=7"):
        R.pretrained_schedule("digits", 7)
    assert (pretrained_path("digits") / "schedules").is_dir()


@pytest.mark.parametrize("family", ["ddpm", "flow"])
def test_coefficient_solver_at_zero_is_dpmpp2m(mixture, family):
    ns = R.NoiseSchedule.linear(1000) if family == "ddpm" else R.NoiseSchedule.flow(time_scale=1000.0)
    model = mixture if family == "ddpm" else mixture.as_family(ns, "velocity").denoiser
    z = jax.random.normal(jax.random.key(5), (16, 8))
    for nfe in (1, 2, 6):
        s = R.baseline_schedule(ns, nfe, "uniform")
        want = R.rbe_sample(model, z, s, "dpmpp2m")
        got = jax.jit(R.rbe_sample)(model, z, s, R.dpmpp2m_coefficients(np.zeros(nfe), np.zeros(nfe)))
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
    other = R.rbe_sample(model, z, s, R.dpmpp2m_coefficients(np.full(6, 0.3), np.zeros(6)))
    assert float(jnp.abs(other - want).max()) > 1e-3  # the coefficients act
    with pytest.raises(ValueError, match="same length"):
        R.dpmpp2m_coefficients(np.zeros(3), np.zeros(4))


def test_learned_coefficients_are_stored_and_sampled_with(linear, mixture, taught, tmp_path):
    s = R.learn_schedule(mixture, linear, taught, 5, "dpmpp2m", coefficients=True, steps=60, batch_size=64, learning_rate=0.05)
    i = s.info
    held = taught.take(slice(192, None))
    if i["selected"] != "learned":  # the guard kept a fixed spacing: then no coefficients
        assert "coefficients" not in i
        pytest.skip("the guard kept a fixed spacing")
    c = i["coefficients"]
    assert c["base"] == "dpmpp2m" and len(c["c"]) == len(c["e"]) == 5 and np.abs(c["c"]).max() > 0
    solver = R.learned_solver(s)
    assert R.schedule_stats(mixture, s, solver, held).as_dict() == pytest.approx(i["held_out"], rel=1e-4)
    back = R.Schedule.load(s.save(tmp_path / "c.json"), linear)
    np.testing.assert_array_equal(np.asarray(R.rbe_sample(mixture, held.noise, back, R.learned_solver(back))), np.asarray(R.rbe_sample(mixture, held.noise, s, solver)))
    with pytest.raises(ValueError, match="no learned solver coefficients"):
        R.learned_solver(R.baseline_schedule(linear, 5))
    with pytest.raises(ValueError, match="solver='dpmpp2m'"):
        R.learn_schedule(mixture, linear, taught, 5, "unipc", coefficients=True)


def test_learn_schedule_caps_nfe(mixture, linear, noise8):
    """nfe = 10**6 ran unbounded (5 GB after 9 minutes): now refused at once, like calibrate."""
    with pytest.raises(ValueError, match=r"1 <= nfe <= 1000, got 1000000"):
        R.learn_schedule(mixture, linear, noise8, 10**6, "unipc")
