"""Multistep solvers against independent slow implementations (NumPy, float64, written from
the papers' general formulas), and their convergence orders on closed-form Gaussian data."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rbe_jax as R


def _tables(sched):
    p = sched.points()
    return p.alpha, p.sigma, p.lam, p.t


def _eps(gm, x, t):
    return np.asarray(gm(jnp.asarray(x), jnp.full((x.shape[0],), t, x.dtype)))


def dpmpp_multistep_reference(gm, x, sched, order: int, lower_order_final: bool = False):
    """DPM-Solver++ multistep (Lu et al. 2022, Alg. 2 and its third-order form), warm-up with
    lower orders, first order on the final step to clean data; with ``lower_order_final``
    the order is at most the number of steps left, this one included (DPM-Solver's rule)."""
    a, s, lam, ts = _tables(sched)
    hist = []  # (lambda, x0), newest last
    for i in range(len(ts) - 1):
        x0 = (x - s[i] * _eps(gm, x, ts[i])) / a[i]
        hist.append((lam[i], x0))
        if s[i + 1] == 0.0:
            x = x0
            continue
        h = lam[i + 1] - lam[i]
        k = min(order, len(hist))
        if lower_order_final:
            k = min(k, len(ts) - 1 - i)
        e = math.expm1(-h)
        x_new = s[i + 1] / s[i] * x - a[i + 1] * e * x0
        if k >= 2:
            r0 = (hist[-1][0] - hist[-2][0]) / h
            d1_0 = (hist[-1][1] - hist[-2][1]) / r0
        if k == 2:
            x_new = x_new - 0.5 * a[i + 1] * e * d1_0
        if k == 3:
            r1 = (hist[-2][0] - hist[-3][0]) / h
            d1_1 = (hist[-2][1] - hist[-3][1]) / r1
            d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            x_new = x_new + a[i + 1] * (e / h + 1.0) * d1 - a[i + 1] * ((e + h) / h**2 - 0.5) * d2
        x = x_new
    return x


def _unipc_coeffs(rks, hh, bh):
    """UniPC's rho from the general linear system R rho = b (Zhao et al. 2023, Alg. 2/3)."""
    e = math.expm1(hh)
    phi, fact, rows, b = e / hh - 1.0, 1, [], []
    for i in range(1, len(rks) + 1):
        rows.append(np.asarray(rks) ** (i - 1))
        b.append(phi * fact / bh)
        fact *= i + 1
        phi = phi / hh - 1.0 / fact
    return np.linalg.solve(np.stack(rows), np.asarray(b))


def unipc_reference(gm, x, sched, order: int = 2):
    """UniPC with B(h) = expm1(-h): UniP of ``order`` and UniC after every evaluation but the
    first, history of x0 at the evaluated (uncorrected) points."""
    a, s, lam, ts = _tables(sched)
    hist, last = [], None  # hist: (lambda, x0); last: (x_prev, i_prev, order_prev)
    for i in range(len(ts) - 1):
        x0 = (x - s[i] * _eps(gm, x, ts[i])) / a[i]
        if last is not None:  # UniC on the point just reached
            xp, ip, kp = last
            h = lam[i] - lam[ip]
            hh = -h
            m0 = hist[-1][1]
            rks = [(hist[-1 - j][0] - lam[ip]) / h for j in range(1, kp)] + [1.0]
            d1s = [(hist[-1 - j][1] - m0) / rks[j - 1] for j in range(1, kp)]
            rho = np.asarray([0.5]) if kp == 1 else _unipc_coeffs(rks, hh, math.expm1(hh))
            res = sum(r * d for r, d in zip(rho[:-1], d1s)) + rho[-1] * (x0 - m0)
            x = s[i] / s[ip] * xp - a[i] * math.expm1(hh) * m0 - a[i] * math.expm1(hh) * res
        hist.append((lam[i], x0))
        if s[i + 1] == 0.0:
            x = x0
            continue
        k = min(order, len(hist))
        h = lam[i + 1] - lam[i]
        hh = -h
        x_new = s[i + 1] / s[i] * x - a[i + 1] * math.expm1(hh) * x0
        if k >= 2:
            rks = [(hist[-1 - j][0] - lam[i]) / h for j in range(1, k)]
            d1s = [(hist[-1 - j][1] - x0) / rks[j - 1] for j in range(1, k)]
            rho = np.asarray([0.5]) if k == 2 else _unipc_coeffs(rks, hh, math.expm1(hh))
            x_new = x_new - a[i + 1] * math.expm1(hh) * sum(r * d for r, d in zip(rho, d1s))
        last = (x, i, k)
        x = x_new
    return x


@pytest.mark.parametrize("kind, nfe", [("logsnr", 8), ("quadratic", 5), ("uniform", 12)])
def test_solvers_equal_slow_references(linear, kind, nfe):
    with jax.enable_x64(True):
        gm = R.testing.GaussianMixture.random(0, 6, 4, linear, dtype=jnp.float64)
        x = np.asarray(jax.random.normal(jax.random.key(1), (8, 6), jnp.float64))
        sched = R.baseline_schedule(linear.respace(100), nfe, kind)
        for solver, ref in (
            (R.dpmpp2m(), lambda: dpmpp_multistep_reference(gm, x, sched, 2)),
            (R.dpmpp3m(), lambda: dpmpp_multistep_reference(gm, x, sched, 3)),
            (R.dpmpp3m(lower_order_final=True), lambda: dpmpp_multistep_reference(gm, x, sched, 3, lower_order_final=True)),
            (R.unipc(), lambda: unipc_reference(gm, x, sched, 2)),
        ):
            got = np.asarray(R.rbe_sample(gm, jnp.asarray(x), sched, solver))
            np.testing.assert_allclose(got, ref(), rtol=1e-9, atol=1e-9, err_msg=solver.name)


def test_unipc_without_corrector_is_dpmpp2m(mixture, grid, noise8):
    sched = R.baseline_schedule(grid, 9, "quadratic")
    a = R.rbe_sample(mixture, noise8, sched, R.unipc(corrector=False))
    b = R.rbe_sample(mixture, noise8, sched, R.dpmpp2m())
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _gaussian_errors(linear, solver, ns):
    mean, std = np.linspace(-0.5, 0.5, 4), np.asarray([0.3, 0.5, 0.8, 1.0])
    with jax.enable_x64(True):
        gm = R.testing.GaussianMixture.create([1.0], mean[None], std[None], linear, dtype=jnp.float64)
        x = jax.random.normal(jax.random.key(0), (16, 4), jnp.float64)
        exact = R.testing.gaussian_ode_solution(x, linear.alpha_bar[-1], 1.0, mean, std)
        return np.asarray([float(jnp.sqrt(jnp.mean((R.rbe_sample(gm, x, R.baseline_schedule(linear, n, "logsnr"), solver) - exact) ** 2))) for n in ns])


def test_unipc_converges_at_third_order(linear):
    """UniP-2 + UniC: third order (error ratio about 8 per doubling) before the error floor
    of the final first-order jump to clean data (about 7e-5 here)."""
    e = _gaussian_errors(linear, R.unipc(), [20, 40])
    assert e[0] / e[1] > 0.8 * 2.0 ** R.unipc().order, e


def test_dpmpp3m_beats_second_order(linear):
    """DPM-Solver++(3M) with its first-order warm-up step: faster than second order
    (ratio 4) in the range measured, and more accurate than 2M at equal steps."""
    e3 = _gaussian_errors(linear, R.dpmpp3m(), [20, 40, 80])
    e2 = _gaussian_errors(linear, R.dpmpp2m(), [20, 40, 80])
    assert np.all(e3[:-1] / e3[1:] > 4.5) and np.all(e3 < e2), (e3, e2)


def test_lower_order_final_lowers_only_third_order(mixture, grid, noise8):
    """DPM-Solver's rule (order <= steps left): 3M takes its step before the final one at
    order 2; the order-2 solvers are untouched (their final step is first order anyway)."""
    sched = R.baseline_schedule(grid, 8, "logsnr")
    same = lambda a, b: np.testing.assert_array_equal(R.rbe_sample(mixture, noise8, sched, a), R.rbe_sample(mixture, noise8, sched, b))
    same(R.dpmpp2m(), R.dpmpp2m(lower_order_final=True))
    same(R.unipc(), R.unipc(lower_order_final=True))
    a = np.asarray(R.rbe_sample(mixture, noise8, sched, R.dpmpp3m()))
    b = np.asarray(R.rbe_sample(mixture, noise8, sched, R.dpmpp3m(lower_order_final=True)))
    assert not np.allclose(a, b)
    short = R.Schedule.from_lambdas(grid, np.asarray(sched.lam)[[0, 1, 2, -1]])  # 3 steps: orders 1, 2, 1 either way
    np.testing.assert_array_equal(R.rbe_sample(mixture, noise8, short, R.dpmpp3m()), R.rbe_sample(mixture, noise8, short, R.dpmpp3m(lower_order_final=True)))
