"""Every Gaussian diffusion family on the one continuous-time core: the same exact mixture
written as a VP table, score_sde VP, VE, EDM and flow model, with every prediction, against
each other and against a float64 solve of its probability-flow ODE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rbe_jax as R

FAMILIES = {
    "ddpm": R.NoiseSchedule.linear(1000),
    "vp": R.NoiseSchedule.vp_continuous(),
    "ve": R.NoiseSchedule.ve(0.01, 50.0),
    "edm": R.NoiseSchedule.edm(),
    "flow": R.NoiseSchedule.flow(time_scale=1000.0),
}
ZTSNR = R.NoiseSchedule.from_betas(np.r_[np.linspace(1e-4, 0.02, 999), 1.0])


def _predictions(ns):
    return [p for p in R.PREDICTIONS if p != "velocity" or ns.process.has_velocity]


@pytest.fixture(scope="module")
def base():
    return R.testing.GaussianMixture.random(0, 8, 5, FAMILIES["vp"])


@pytest.fixture(scope="module")
def z():
    return jax.random.normal(jax.random.key(1), (64, 8))


@pytest.mark.parametrize("solver", ["ddim", "unipc"])
def test_one_mixture_in_every_family_and_prediction_gives_the_same_samples(base, z, solver):
    """Same data, same lambda schedule, same solver: the samples agree to float32 rounding
    once the start noise is mapped between the families' priors."""
    lam = np.append(np.linspace(-3.5, 4.0, 10), np.inf)
    want = np.asarray(R.rbe_sample(base.as_family(FAMILIES["vp"], "eps").denoiser, z, R.Schedule.from_lambdas(FAMILIES["vp"], lam), solver))
    for name, ns in FAMILIES.items():
        s = R.Schedule.from_lambdas(ns, lam)
        for pred in _predictions(ns):
            x = R.rbe_sample(base.as_family(ns, pred).denoiser, z / ns.prior_std(lam[0]), s, solver)
            np.testing.assert_allclose(x, want, rtol=0, atol=3e-5, err_msg=f"{name} {pred}")


@pytest.mark.parametrize("name", sorted(FAMILIES) + ["ztsnr"])
def test_fifty_steps_against_a_float64_solve(base, z, name):
    """UniPC on 50 quadratically spaced points in the model's time (EDM and VE: evenly in
    half-log-SNR) lands within 1e-3 (VE, EDM: 2e-3) of the model's exact endpoint: the ODE
    solved in float64 down to the least noisy trained point, then the exact denoiser."""
    pytest.importorskip("diffrax")
    ns = ZTSNR if name == "ztsnr" else FAMILIES[name]
    pred = {"ddpm": "eps", "vp": "score", "ve": "score", "edm": "x0", "flow": "velocity", "ztsnr": "v"}[name]
    lo, hi = ns.lam_range
    with jax.enable_x64(True):
        gm64 = R.testing.GaussianMixture.random(0, 8, 5, FAMILIES["vp"], dtype=jnp.float64)
        ref = np.asarray(R.testing.ode_solution(gm64, np.asarray(z, np.float64) * float(ns.prior_std(np.asarray(lo))), lo, hi))
    kind = "logsnr" if name in ("ve", "edm") else "quadratic"
    x = np.asarray(R.rbe_sample(base.as_family(ns, pred).denoiser, z, R.baseline_schedule(ns, 50, kind), R.unipc()))
    rmse = float(np.sqrt(np.mean((x - ref) ** 2)))
    assert rmse < (2e-3 if name in ("ve", "edm") else 1e-3), rmse
    coarse = np.asarray(R.rbe_sample(base.as_family(ns, pred).denoiser, z, R.baseline_schedule(ns, 10, kind), R.unipc()))
    assert float(np.sqrt(np.mean((coarse - ref) ** 2))) > 3 * rmse  # it converges


def test_zero_terminal_snr_starts_from_pure_noise_exactly(base, z):
    ns = ZTSNR
    assert np.isneginf(ns.lam_range[0]) and ns.alpha_bar[-1] == 0.0
    s = R.baseline_schedule(ns, 8, "uniform")
    assert np.isneginf(s.lam[0]) and s.model_times[0] == 999.0
    v_model = base.as_family(ns, "v").denoiser
    x = R.rbe_sample(v_model, z, s, R.unipc())
    # the first step from pure noise is DDIM's exact limit: x1 = sigma_1 z + alpha_1 E[x0]
    p = s.points()
    _, x0 = base.denoise_at(z, -np.inf)
    np.testing.assert_allclose(x0, jnp.broadcast_to(jnp.sum(base.weights[:, None] * base.means, 0), z.shape), rtol=1e-5, atol=1e-6)
    one = R.rbe_sample(v_model, z, R.Schedule.from_lambdas(ns, [s.lam[0], s.lam[1], np.inf]), R.ddim())
    np.testing.assert_allclose(one, base.denoise_at(p.sigma[1] * z + p.alpha[1] * x0, p.lam[1])[1], rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(np.asarray(x)))
    with pytest.raises(ValueError, match="starts at pure noise"):
        R.rbe_sample(base.as_family(ns, "eps").denoiser, z, s)
    with pytest.raises(ValueError, match="pure noise"):
        R.calibrate(base.as_family(ns, "eps").denoiser, ns.respace(100), z, 5)


@pytest.mark.parametrize("name, pred", [("ve", "score"), ("edm", "x0"), ("flow", "velocity"), ("ztsnr", "v")])
def test_rbe_calibrates_on_every_familys_grid(base, z, name, pred):
    ns = ZTSNR if name == "ztsnr" else FAMILIES[name]
    grid = ns.respace(100)
    model = base.as_family(ns, pred).denoiser
    errs = []
    for rule in ("backward_error", "local_error"):
        s = R.calibrate(model, grid, z, 8, rule=rule)
        assert s.nfe == 8 and s.indices[0] == 99 and s.meta.grid_fingerprint == grid.fingerprint
        if np.isneginf(grid.log_snr[-1]):  # every path leaves pure noise by one exact step
            assert s.indices[1] == 98
        ref = R.reference_solution(model, ns, z, 200)
        errs.append(R.schedule_error(model, z, ref, s, "unipc"))
    assert max(errs) < 0.1, errs


def test_gradients_through_a_flow_schedule_from_pure_noise(base, z):
    """Learning a flow model's times: the start stays at pure noise and every solver's
    gradient with respect to the other times is finite and nonzero."""
    ns = FAMILIES["flow"]
    model = base.as_family(ns, "velocity").denoiser
    start = R.baseline_schedule(ns, 6, "shift")
    target = R.rbe_sample(model, z, R.baseline_schedule(ns, 60, "uniform"), R.unipc())
    for solver in (R.ddim(), R.dpmpp2m(), R.dpmpp3m(), R.unipc()):
        def loss(inner):
            lam = jnp.concatenate([jnp.asarray([-jnp.inf]), inner, jnp.asarray([jnp.inf])])
            return jnp.mean((R.rbe_sample(model, z, R.Schedule.from_lambdas(ns, lam), solver) - target) ** 2)

        g = np.asarray(jax.grad(loss)(jnp.asarray(start.lam[1:-1], jnp.float32)))
        assert np.all(np.isfinite(g)) and np.any(g != 0), (solver.name, g)


def test_conventions_by_argument_or_one_line_wrapper(base, z):
    """SD3's t x 1000 (time_scale), the reversed flow orientation (t = 1 data, velocity
    x0 - eps) and a VE model fed sigma give the same samples as the plain conventions."""
    unit = R.NoiseSchedule.flow()
    gm = base.as_family(unit, "velocity")
    s = R.baseline_schedule(unit, 8, "shift")
    want = np.asarray(R.rbe_sample(gm.denoiser, z, s, R.unipc()))
    sd3 = R.NoiseSchedule.flow(time_scale=1000.0)
    m = R.as_model(lambda x, t: gm(x, t / 1000.0), prediction="velocity", noise_schedule=sd3)
    np.testing.assert_allclose(R.rbe_sample(m, z, R.baseline_schedule(sd3, 8, "shift"), R.unipc()), want, rtol=0, atol=1e-5)
    reversed_net = lambda x, t_rev: -gm(x, 1.0 - t_rev)  # a model written with t = 1 data, v = x0 - eps
    m = R.as_model(lambda x, t: -reversed_net(x, 1.0 - t), prediction="velocity", noise_schedule=unit)
    np.testing.assert_allclose(R.rbe_sample(m, z, s, R.unipc()), want, rtol=0, atol=1e-5)
    ve_t, ve_sigma = R.NoiseSchedule.ve(0.01, 50.0), R.NoiseSchedule.ve(0.01, 50.0, time_input="sigma")
    a = R.rbe_sample(base.as_family(ve_t, "score").denoiser, z, R.baseline_schedule(ve_t, 8, "logsnr"), R.unipc())
    b = R.rbe_sample(base.as_family(ve_sigma, "score").denoiser, z, R.baseline_schedule(ve_sigma, 8, "logsnr"), R.unipc())
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_the_model_receives_its_native_time(base, z):
    seen = {}
    for name, ns in FAMILIES.items():
        gm = base.as_family(ns, "x0")
        got = []

        def spy(x, t, gm=gm, got=got):
            jax.debug.callback(lambda v: got.append(float(np.asarray(v)[0])), t)
            return gm(x, t)

        s = R.baseline_schedule(ns, 4, "uniform")
        R.rbe_sample(R.as_model(spy, prediction="x0", noise_schedule=ns), z[:4], s)
        seen[name] = got
        np.testing.assert_allclose(got, s.model_times, rtol=1e-5)
    assert seen["ddpm"][0] == 999.0 and seen["vp"][0] == pytest.approx(1.0) and seen["ve"][0] == pytest.approx(1.0)
    assert seen["edm"][0] == pytest.approx(80.0) and seen["flow"][0] == pytest.approx(1000.0)


@pytest.mark.parametrize(
    "name, true, declared",
    [
        ("flow", "velocity", "eps"),
        ("ve", "score", "eps"),
        ("ddpm", "eps", "score"),
        ("edm", "x0", "eps"),
        ("vp", "eps", "x0"),
        ("ve", "score", "v"),  # sampled: RMSE 12 instead of 0.0015
        ("edm", "x0", "v"),  # 1.28 instead of 0.0041: consistent, but a denoiser of Gaussian data
        ("ztsnr", "v", "x0"),  # 1.25 instead of 0.0015
    ],
)
def test_a_mislabelled_prediction_is_named(name, true, declared):
    """Unit-scale data: the probe names the label that fits (the first two are the measured
    silent failures: RMSE 154 and 5e6 when sampled; the last three passed the earlier probe)."""
    ns = ZTSNR if name == "ztsnr" else FAMILIES[name]
    gm = R.testing.GaussianMixture.random(3, 16, 6, FAMILIES["vp"], std_range=(0.3, 1.0), mean_range=1.0).as_family(ns, true)
    noise = jax.random.normal(jax.random.key(0), (16, 16))
    with pytest.raises(R.PredictionMismatch, match=f"do not look like '{declared}'.*plausible readings: .*'{true}'.*prediction='{true}'"):
        R.check_model(R.as_model(gm, prediction=declared, noise_schedule=ns), ns, noise)
    c = R.check_model(R.as_model(gm, prediction=true, noise_schedule=ns), ns, noise)
    assert c.passed and not c.mismatch and c.likely == true
    assert c.message().startswith(f"the model's outputs fit '{true}' predictions")  # a pass reads as one


def test_a_small_model_error_does_not_hide_a_wrong_label():
    """An exact eps mixture plus 0.05 sin(7x): read as x0 it is no denoiser (the earlier probe
    passed it); read as eps it passes."""
    ns = FAMILIES["ddpm"]
    gm = R.testing.GaussianMixture.random(0, 8, 5, FAMILIES["vp"]).as_family(ns, "eps")
    noisy = lambda x, t: gm(x, t) + 0.05 * jnp.sin(7.0 * x)  # noqa: E731
    noise = jax.random.normal(jax.random.key(2), (16, 8))
    with pytest.raises(R.PredictionMismatch, match="do not look like 'x0'.*prediction='eps'"):
        R.check_model(R.as_model(noisy, prediction="x0", noise_schedule=ns), ns, noise)
    assert R.check_model(R.as_model(noisy, prediction="eps", noise_schedule=ns), ns, noise).passed


def test_no_plausible_reading_raises_with_the_numbers():
    """A random network is no denoiser under any reading: strict raises, naming the ratios;
    strict=False reports it."""
    ns = FAMILIES["edm"]
    w = jax.random.normal(jax.random.key(0), (8, 8))
    net = lambda x, sigma: jnp.tanh(x @ w) * 3.0 + jnp.log(sigma)[:, None]  # noqa: E731
    noise = jax.random.normal(jax.random.key(1), (16, 8))
    with pytest.raises(R.PredictionMismatch, match="no reading of the model's output is a consistent denoiser.*error ratios"):
        R.check_model(R.as_model(net, prediction="x0", noise_schedule=ns), ns, noise)
    c = R.check_model(R.as_model(net, prediction="x0", noise_schedule=ns), ns, noise, strict=False)
    assert c.no_fit and not c.passed and c.likely is None


def test_the_probe_passes_true_labels(base):
    """The sharp mixture (stds 0.02-0.2) with each family's usual prediction and with x0."""
    noise = jax.random.normal(jax.random.key(0), (16, 8))
    usual = {"ddpm": "eps", "vp": "score", "ve": "score", "edm": "x0", "flow": "velocity"}
    for name, ns in FAMILIES.items():
        for pred in {usual[name], "x0"}:
            c = R.check_model(base.as_family(ns, pred).denoiser, ns, noise)
            assert c.passed and c.plausible(pred) and not c.mismatch, (name, pred, c)
