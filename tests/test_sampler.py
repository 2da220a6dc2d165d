import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rbe_jax as R


@pytest.fixture(scope="module")
def gaussian_case(linear):
    """Gaussian data: the probability-flow ODE is affine and solved in closed form."""
    mean = np.linspace(-0.5, 0.5, 4)  # float64 NumPy: exact under jax.enable_x64
    std = np.asarray([0.3, 0.5, 0.8, 1.0])
    return mean, std


def _errors(linear, gaussian_case, solver, kind, ns_steps):
    solver = R.core.solvers.get_solver(solver)
    mean, std = gaussian_case
    with jax.enable_x64(True):
        gm = R.testing.GaussianMixture.create([1.0], mean[None], std[None], linear, dtype=jnp.float64)
        x = jax.random.normal(jax.random.key(0), (16, 4), jnp.float64)
        exact = R.testing.gaussian_ode_solution(x, linear.alpha_bar[-1], 1.0, mean, std)
        errs = []
        for n in ns_steps:
            y = R.rbe_sample(gm, x, R.baseline_schedule(linear, n, kind), solver)
            errs.append(float(jnp.sqrt(jnp.mean((y - exact) ** 2))))
    return np.asarray(errs)


@pytest.mark.parametrize("kind", ["logsnr", "uniform"])
def test_ddim_converges_at_first_order(linear, gaussian_case, kind):
    e = _errors(linear, gaussian_case, "ddim", kind, [20, 40, 80])
    ratios = e[:-1] / e[1:]
    want = 2.0 ** R.ddim().order  # error ratio per doubling of the steps
    assert np.all((ratios > 0.85 * want) & (ratios < 1.15 * want)), ratios


@pytest.mark.parametrize("kind", ["logsnr", "uniform"])
def test_dpmpp2m_converges_at_second_order(linear, gaussian_case, kind):
    e = _errors(linear, gaussian_case, "dpmpp2m", kind, [20, 40, 80])
    ratios = e[:-1] / e[1:]
    assert np.all(ratios > 0.8 * 2.0 ** R.dpmpp2m().order), ratios
    assert e[-1] < _errors(linear, gaussian_case, "ddim", kind, [80])[0] / 10


def test_reference_ode_solver_matches_closed_form(linear, gaussian_case):
    pytest.importorskip("diffrax")
    mean, std = gaussian_case
    with jax.enable_x64(True):
        gm = R.testing.GaussianMixture.create([1.0], mean[None], std[None], linear, dtype=jnp.float64)
        x = jax.random.normal(jax.random.key(3), (8, 4), jnp.float64)
        a0 = float(linear.alpha_bar[-1])
        exact = R.testing.gaussian_ode_solution(x, a0, 1.0, mean, std)
        ref = R.testing.reference_ode_solution(gm.eps_at, x, a0)
        np.testing.assert_allclose(ref, exact, atol=1e-8)


def test_exactly_nfe_model_evaluations_in_schedule_order(mixture, grid, noise8):
    seen = []

    def model(x, t):
        jax.debug.callback(lambda tt: seen.append(float(tt[0])), t)
        return mixture(x, t)

    sched = R.baseline_schedule(grid, 7, "quadratic")
    jax.block_until_ready(jax.jit(R.rbe_sample)(R.as_model(model), noise8, sched))
    assert len(seen) == 7
    np.testing.assert_allclose(seen, sched.model_times, rtol=1e-6)
    assert sched.model_times[0] == 999.0 and np.all(np.diff(sched.model_times) < 0)


@pytest.mark.parametrize("solver", ["ddim", "dpmpp2m"])
def test_jit_matches_eager_and_is_deterministic(mixture, grid, noise8, solver):
    sched = R.baseline_schedule(grid, 10, "logsnr")
    eager = R.rbe_sample(mixture, noise8, sched, solver)
    f = jax.jit(R.rbe_sample)
    s = R.core.solvers.get_solver(solver)
    a = f(mixture, noise8, sched, s)
    b = f(mixture, noise8, sched, s)
    np.testing.assert_allclose(a, eager, atol=1e-6, rtol=1e-6)
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_user_jit_keys_on_the_schedule_and_traced_times_trace_once(mixture, linear, grid, noise8):
    """Under the user's own jax.jit a schedule's metadata is static: the same schedule is a
    cache hit, another one is a new cache entry (its metadata is never stale), while the
    model is traced once (the sampler's core is cached on shapes).  Times passed as a traced
    array make one cache entry for any values."""
    traces = []

    def model(x, t):
        traces.append(1)  # runs at trace time only
        return mixture(x, t)

    m = R.as_model(model)
    f = jax.jit(lambda *args: R.rbe_sample(*args))  # a cache of its own (jit(R.rbe_sample) shares one)
    s = R.baseline_schedule(grid, 10, "uniform")
    f(m, noise8, s)
    per_trace = len(traces)
    assert per_trace >= 1
    f(m, noise8 + 1.0, s)
    assert f._cache_size() == 1
    q = f(m, noise8, R.baseline_schedule(grid, 10, "quadratic"))
    assert f._cache_size() == 2 and len(traces) == per_trace
    np.testing.assert_array_equal(q, R.rbe_sample(m, noise8, R.baseline_schedule(grid, 10, "quadratic")))
    g = jax.jit(lambda lam: R.rbe_sample(m, noise8, R.Schedule.from_lambdas(linear, lam)))
    for kind in ("uniform", "quadratic", "logsnr"):
        got = g(R.baseline_schedule(linear, 10, kind).lam)
        want = R.rbe_sample(m, noise8, R.baseline_schedule(linear, 10, kind))
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)  # traced tables: float32
    assert g._cache_size() == 1 and len(traces) == per_trace


def test_bad_inputs(mixture, grid, noise8):
    sched = R.baseline_schedule(grid, 5, "uniform")
    with pytest.raises(TypeError, match="Schedule"):
        R.rbe_sample(mixture, noise8, [99, 50, -1])
    with pytest.raises(ValueError, match="unknown solver"):
        R.rbe_sample(mixture, noise8, sched, "euler")
    with pytest.raises(ValueError, match=r"shape \(B, \.\.\.\)"):
        R.rbe_sample(mixture, noise8[0], sched)
    with pytest.raises(TypeError, match="incompatible shapes"):  # the model's own error, unchanged
        R.rbe_sample(mixture, jnp.ones((3, 7)), sched)
    with pytest.raises(ValueError, match="returned shape"):
        R.rbe_sample(lambda x, t: jnp.sum(x, axis=1), noise8, sched)


def _counting(mixture):
    traces = []

    def model(x, t):
        traces.append(1)  # runs at trace time only
        return mixture(x, t)

    return model, traces


def test_eager_calls_compile_once(mixture, grid, noise8):
    """No user-side jax.jit: the second call with the same shapes reuses the compiled scan,
    whatever the schedule's values and however the solver was obtained."""
    model, traces = _counting(mixture)
    m = R.as_model(model)
    R.rbe_sample(m, noise8, R.baseline_schedule(grid, 10, "uniform"), R.dpmpp2m())
    first = len(traces)
    assert first == 1
    for kind in ("quadratic", "logsnr"):
        R.rbe_sample(m, noise8 * 0.5, R.baseline_schedule(grid, 10, kind), "dpmpp2m")
    assert len(traces) == first
    R.rbe_sample(m, noise8, R.baseline_schedule(grid, 10, "uniform"), R.dpmpp2m(lower_order_final=True))
    assert len(traces) == first + 1  # another solver: one more compilation


class _CallableObject:
    """A callable that is not a pytree and not hashable (it defines __eq__ only)."""

    def __init__(self, mixture):
        self.mixture = mixture

    def __eq__(self, other):
        return isinstance(other, _CallableObject)

    def __call__(self, x, t):
        return self.mixture(x, t)


def test_any_callable_model(mixture, grid, noise8):
    import functools

    sched = R.baseline_schedule(grid, 6, "quadratic")
    want = np.asarray(R.rbe_sample(mixture, noise8, sched))
    for model in (
        jax.jit(lambda x, t: mixture(x, t)),
        _CallableObject(mixture),
        functools.partial(lambda gm, x, t: gm(x, t), mixture),
    ):
        chex.assert_trees_all_close(R.rbe_sample(model, noise8, sched), want, rtol=1e-6, atol=1e-6)
        chex.assert_trees_all_close(jax.jit(R.rbe_sample)(R.as_model(model), noise8, sched), want, rtol=1e-6, atol=1e-6)
        paths = R.adaptive_paths(model, grid, noise8[:8], 0.3)
        assert bool(np.all(np.asarray(paths.finished)))


def test_model_errors_propagate_with_their_own_message(grid, noise8):
    def broken(x, t):
        raise RuntimeError("weights not loaded")

    sched = R.baseline_schedule(grid, 3, "uniform")
    with pytest.raises(RuntimeError, match="weights not loaded"):
        R.rbe_sample(broken, noise8, sched)
    with pytest.raises(RuntimeError, match="weights not loaded"):
        R.calibrate(broken, grid, noise8, 3)
    with pytest.raises(ValueError, match="prediction must be floating point"):
        R.rbe_sample(lambda x, t: jnp.zeros(x.shape, jnp.int32), noise8, sched)


def test_check_finite_names_sample_step_and_point(mixture, grid, noise8):
    sched = R.baseline_schedule(grid, 5, "uniform")
    t_bad = float(sched.model_times[2])

    def model(x, t):  # NaN for the samples 3.. at the third step only
        eps = mixture(x, t)
        rows = (jnp.arange(x.shape[0]) >= 3)[:, None] & (jnp.abs(t[:, None] - t_bad) < 1e-3)
        return jnp.where(rows, jnp.nan, eps)

    x = R.rbe_sample(model, noise8, sched)  # off by default: no host read
    assert np.isnan(np.asarray(x)[3:]).all()
    lam = float(sched.lam[2])
    with pytest.raises(FloatingPointError, match=rf"sample 3 at step 2, lambda {lam:.5g} \(model time {t_bad:.6g}\); 61 of 64"):
        R.rbe_sample(model, noise8, sched, check_finite=True)
    on_grid = R.Schedule.from_indices(grid, [99, 70, 40, 20, -1])
    t_grid = float(on_grid.model_times[1])
    bad = lambda x, t: jnp.where((t == t_grid)[:, None], jnp.nan, mixture(x, t))
    with pytest.raises(FloatingPointError, match=r"sample 0 at step 1, grid index 70, lambda"):
        R.rbe_sample(bad, noise8, on_grid, check_finite=True)
    with pytest.raises(ValueError, match="outside jax.jit"):
        jax.jit(lambda n: R.rbe_sample(mixture, n, sched, check_finite=True))(noise8)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_noise_and_model(mixture, grid, noise8, dtype):
    """Low-precision noise with a float32 model, and with a low-precision model: the carry
    keeps the noise's dtype and the samples stay within a few ulps of float32 sampling of
    the same (rounded) noise.  The mixture is sharp, so a sample near a boundary between
    components may flip: the typical (median, 90th percentile) error is what is bounded."""
    sched = R.baseline_schedule(grid, 10, "quadratic")
    noise = noise8.astype(dtype)
    want = np.asarray(R.rbe_sample(mixture, noise.astype(jnp.float32), sched, R.dpmpp2m()))
    ulp = float(jnp.finfo(dtype).eps)
    low = jax.tree_util.tree_map(lambda a: a.astype(dtype), mixture)
    for model in (mixture, low):
        x = R.rbe_sample(model, noise, sched, R.dpmpp2m())
        chex.assert_type(x, dtype)
        chex.assert_shape(x, noise.shape)
        err = np.sqrt(np.mean((np.asarray(x, np.float32) - want) ** 2, axis=1))
        assert np.all(np.isfinite(err))
        assert np.median(err) < 2 * ulp and np.percentile(err, 90) < 10 * ulp, (np.median(err), np.percentile(err, 90))


def test_step_tables_are_float64_and_exact_near_data(grid):
    """In bfloat16 the grid's first alpha-bar (0.9999) rounds to exactly 1; the schedule's
    sigma comes from a float64 table instead, and cast once it stays > 0."""
    sched = R.Schedule.from_indices(grid, [99, 40, 10, 0, -1])
    p = sched.points()
    ab = np.asarray(sched.alpha_bar, np.float64)
    assert p.sigma.dtype == np.float64
    np.testing.assert_array_equal(p.sigma, np.sqrt(1.0 - ab))  # the table's own values
    np.testing.assert_array_equal(p.alpha, np.sqrt(ab))
    np.testing.assert_array_equal(p.t[:-1], grid.timesteps[[99, 40, 10, 0]])
    assert np.isinf(p.lam[-1]) and p.sigma[-1] == 0.0 and p.alpha[-1] == 1.0
    assert float(jnp.asarray(grid.alpha_bar[0], jnp.bfloat16)) == 1.0
    assert float(jnp.asarray(p.sigma[-2], jnp.bfloat16)) > 0.0


def test_solver_factories_are_cached_per_option():
    """Equal options give the same object (jit keys on it); other options another one.
    What ``lower_order_final`` does is tested in test_solvers.py."""
    assert R.dpmpp2m() is R.dpmpp2m() and R.dpmpp2m(lower_order_final=True) is not R.dpmpp2m()
    assert R.unipc(corrector=False) is R.unipc(corrector=False) is not R.unipc()
