import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rbe_jax as R
from rbe_jax.core.solvers import ddim_update


def test_field_is_the_one_step_ddim_difference_quotient():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=(5, 3)))
        eps = jnp.asarray(rng.normal(size=(5, 3)))
        a = jnp.asarray([1e-4, 0.1, 0.5, 0.9, 0.999])
        a_next = jnp.asarray([2e-4, 0.2, 0.6, 0.95, 1.0])  # includes the step to clean data
        f = R.rbe.one_step_field(x, eps, a, a_next)
        want = (ddim_update(x, eps, a, a_next) - x) / (a_next - a)[:, None]
        np.testing.assert_allclose(f, want, rtol=1e-10)


def test_indicator_equals_explicit_jacobian(linear):
    """||grad ||f||^2|| with one VJP == 2 ||J^T f|| with the full per-sample Jacobian."""
    with jax.enable_x64(True):
        gm = R.testing.GaussianMixture.random(3, 4, 3, linear, dtype=jnp.float64)
        g = linear.respace(50)
        x = jax.random.normal(jax.random.key(1), (6, 4), jnp.float64)
        k = jnp.asarray([49, 30, 20, 10, 3, 0])
        ext = jnp.asarray(g.alpha_bar_ext)
        a, a_next = ext[k + 1], ext[k]
        pt = R.core.noise.Point(*(jnp.asarray(v)[k] for v in g.grid_points()))
        t = pt.t
        be = R.backward_error(R.as_model(gm, noise_schedule=linear), x, pt, a, a_next)
        for b in range(6):
            fb = lambda xb: R.rbe.one_step_field(xb[None], gm(xb[None], t[b : b + 1]), a[b : b + 1], a_next[b : b + 1])[0]
            J = jax.jacfwd(fb)(x[b])  # (4, 4)
            want = np.linalg.norm(2 * J.T @ fb(x[b]))
            np.testing.assert_allclose(be.indicator[b], want, rtol=1e-10)
        np.testing.assert_allclose(be.eps, gm(x, t), rtol=1e-12)


def _snap_slow(ext, k, a_goal):
    # the grid point with the largest alpha-bar not exceeding a_goal, at least one step
    best = None
    for j in range(-1, k):
        if ext[j + 1] <= a_goal and (best is None or ext[j + 1] > ext[best + 1]):
            best = j
    return k - 1 if best is None else min(best, k - 1)


def test_snap_down_matches_a_slow_search(grid):
    ext = grid.alpha_bar_ext
    rng = np.random.default_rng(0)
    k = rng.integers(0, grid.K, size=400)
    a_goal = ext[k + 1] + rng.uniform(0, 1, size=400) ** 3 * (1 - ext[k + 1])
    got = np.asarray(R.rbe.snap_down(jnp.asarray(ext), jnp.asarray(k), jnp.asarray(a_goal)))
    want = [_snap_slow(ext, int(kk), float(g)) for kk, g in zip(k, np.asarray(jnp.asarray(a_goal)))]
    assert got.tolist() == want
    # also exactly on grid values: a goal equal to a grid alpha-bar lands on that point
    k = np.full(5, 60)
    got = R.rbe.snap_down(jnp.asarray(ext), jnp.asarray(k), jnp.asarray(ext[[11, 21, 31, 41, 51]]))
    assert np.asarray(got).tolist() == [10, 20, 30, 40, 50]


def test_step_size_rule(grid):
    ext = jnp.asarray(grid.alpha_bar_ext)
    k = jnp.asarray([99, 99, 50, 0, 5])
    ind = jnp.asarray([1e6, 1e-9, 0.0, 3.0, 1e12])
    s = R.rbe.step_size(ind, k, ext, 1.0)
    a = ext[k + 1]
    np.testing.assert_allclose(s.h, jnp.minimum(jnp.sqrt(1.0 / ind), 1 - a), rtol=1e-6)
    nxt = np.asarray(s.next_index)
    assert nxt[1] == -1 and nxt[2] == -1  # h = 1 - a: straight to clean data
    assert nxt[4] == 4  # a tiny h still moves one grid step
    assert np.all(nxt < np.asarray(k))


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_tau(grid, tau):
    with pytest.raises(ValueError, match="tau"):
        R.rbe.step_size(jnp.ones(2), jnp.asarray([3, 4]), jnp.asarray(grid.alpha_bar_ext), tau)
