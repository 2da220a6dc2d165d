"""RBE driven by a second-order solver's local error (``calibrate(rule="local_error")``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rbe_jax as R
from rbe_jax.rbe.adaptive import local_error_paths
from rbe_jax.testing import GaussianMixture


@pytest.fixture(scope="module")
def setup():
    full = R.NoiseSchedule.linear(1000)
    grid = full.respace(50)
    model = GaussianMixture.random(0, 4, 3, full)
    noise = jax.random.normal(jax.random.key(0), (32, 4))
    return model, full, grid, noise


def _slow_paths(model, grid, noise, tol, max_steps):
    """The rule written out one sample at a time in NumPy float64 (the model in float32)."""
    lam, al, sg, ts = grid.log_snr, grid.alpha, grid.sigma, grid.timesteps
    K = grid.K

    def x0_at(x, k):
        eps = np.asarray(model(jnp.asarray(x[None], jnp.float32), jnp.asarray([ts[k]], jnp.int32)), np.float64)[0]
        return (x - sg[k] * eps) / al[k]

    def snap(goal, below):
        return min(int(np.sum(lam > goal)), below - 1)

    rms = lambda v: float(np.sqrt(np.mean(v**2)))
    psi1 = lambda h: h + np.expm1(-h)
    psi2 = lambda h: h * h - 2 * h - 2 * np.expm1(-h)
    out = []
    for x in np.asarray(noise, np.float64):
        k, j, path = K - 1, int(0.5 * K), [K - 1]
        x0, x0p, lp = x0_at(x, K - 1), None, None
        while k >= 0 and len(path) <= max_steps:
            if j < 0:
                path.append(-1)
                break
            h = lam[j] - lam[k]
            d = x0 if x0p is None else x0 + h / (2 * (lam[k] - lp)) * (x0 - x0p)
            xt = sg[j] / sg[k] * x - al[j] * np.expm1(-h) * d
            x0t = x0_at(xt, j)
            d1 = (x0t - x0) / h
            if x0p is None:
                est, p = al[j] * rms(d1) * psi1(h), 2.0
            else:
                h0 = lam[k] - lp
                est, p = al[j] * rms((d1 - (x0 - x0p) / h0) / (h + h0)) * (psi2(h) + h0 * psi1(h)), 3.0
            fac = float(np.clip(0.9 * (tol / est) ** (1 / p), 0.1, 10.0))
            if est <= tol or j == k - 1:
                done = sg[j] * rms((x0t - x0) / (sg[k] - sg[j])) <= tol or j == 0
                nxt = -1 if done else snap(lam[j] + h * fac, j)
                x, x0p, lp, x0, k = xt, x0, lam[k], x0t, j
                path.append(j)
                j = nxt
            else:
                j = int(np.clip(snap(lam[k] + h * min(fac, 0.9), k), j + 1, k - 1))
        out.append(path)
    return out


def test_paths_match_a_slow_implementation(setup):
    model, _, grid, noise = setup
    tol = 0.01
    res = local_error_paths(model, grid, noise[:12], tol)
    slow = _slow_paths(model, grid, noise[:12], tol, grid.K)
    paths = np.asarray(res.paths)
    for b, p in enumerate(slow):
        assert paths[b, : len(p)].tolist() == p, b
    assert np.asarray(res.finished).all()
    assert (np.asarray(res.nfe) == [len(p) - 1 for p in slow]).all()
    assert (np.asarray(res.evals) >= np.asarray(res.nfe)).all()


def test_tolerance_orders_step_counts(setup):
    model, _, grid, noise = setup
    loose, tight = (np.asarray(local_error_paths(model, grid, noise, t).nfe).mean() for t in (0.05, 0.002))
    assert tight > loose + 2


def test_endpoints_converge_to_the_reference(setup):
    """With a tight tolerance the adaptive samples approach the accurate solve."""
    model, full, _, noise = setup
    ref = np.asarray(R.reference_solution(model, full, noise, full.K))
    errs = [np.sqrt(np.mean((np.asarray(local_error_paths(model, full, noise, t).samples) - ref) ** 2)) for t in (3e-2, 3e-4)]
    assert errs[1] < 0.3 * errs[0]


def test_calibrate_with_the_local_error_rule(setup):
    model, _, grid, noise = setup
    s = R.calibrate(model, grid, noise, 6, rule="local_error")
    assert s.nfe == 6 and s.method == "rbe" and s.info["rule"] == "local_error"
    assert s.info["calibration_sample_evals"] >= s.info["samples_used"] * 6
    faithful = R.calibrate(model, grid, noise, 6)
    assert faithful.info["rule"] == "backward_error"


def test_bad_rule_and_nonfinite_model(setup):
    model, _, grid, noise = setup
    with pytest.raises(ValueError, match="unknown rule"):
        R.calibrate(model, grid, noise, 6, rule="nope")
    with pytest.raises(ValueError, match="tau"):
        local_error_paths(model, grid, noise, -1.0)

    def nan_model(x, t):
        return jnp.where(t[:, None] < 500, jnp.nan, model(x, t))

    with pytest.raises(FloatingPointError, match="NaN/Inf during calibration"):
        R.calibrate(nan_model, grid, noise, 6, rule="local_error", tau=0.01)
