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
    assert np.all((ratios > 1.7) & (ratios < 2.3)), ratios


@pytest.mark.parametrize("kind", ["logsnr", "uniform"])
def test_dpmpp2m_converges_at_second_order(linear, gaussian_case, kind):
    e = _errors(linear, gaussian_case, "dpmpp2m", kind, [20, 40, 80])
    ratios = e[:-1] / e[1:]
    assert np.all(ratios > 3.2), ratios
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
        jax.debug.callback(lambda tt: seen.append(int(tt[0])), t)
        return mixture(x, t)

    sched = R.baseline_schedule(grid, 7, "quadratic")
    jax.block_until_ready(jax.jit(R.rbe_sample)(R.as_model(model), noise8, sched))
    assert seen == np.asarray(sched.timesteps[:-1]).tolist() and len(seen) == 7


@pytest.mark.parametrize("solver", ["ddim", "dpmpp2m"])
def test_jit_matches_eager_and_is_deterministic(mixture, grid, noise8, solver):
    sched = R.baseline_schedule(grid, 10, "logsnr")
    eager = R.rbe_sample(mixture, noise8, sched, solver)
    f = jax.jit(R.rbe_sample)
    s = R.solvers.get_solver(solver)
    a = f(mixture, noise8, sched, s)
    b = f(mixture, noise8, sched, s)
    np.testing.assert_allclose(a, eager, atol=1e-6, rtol=1e-6)
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_traced_once_per_schedule_length(mixture, grid, noise8):
    traces = []

    def model(x, t):
        traces.append(1)  # runs at trace time only
        return mixture(x, t)

    m = R.as_model(model)
    f = jax.jit(R.rbe_sample)
    f(m, noise8, R.baseline_schedule(grid, 10, "uniform"))
    per_trace = len(traces)
    assert per_trace >= 1
    for kind in ("quadratic", "logsnr", "uniform"):  # same length, other values: no retrace
        f(m, noise8 + 1.0, R.baseline_schedule(grid, 10, kind))
    assert len(traces) == per_trace
    f(m, noise8, R.baseline_schedule(grid, 12, "uniform"))  # a new length traces once more
    assert len(traces) == 2 * per_trace


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
