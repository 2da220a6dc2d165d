import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rbe_jax as R


def slow_reference_paths(eps_fn, grid, noise, tau):
    """RBE.md's procedure written out plainly: one sample at a time, a Python loop over
    steps, the gradient of ||f||^2 by jax.grad on that sample alone, and the snap-down by
    scanning the grid."""
    ext = np.asarray(grid.alpha_bar_ext)
    K = grid.K
    paths, finals = [], []
    for b in range(noise.shape[0]):
        x = noise[b : b + 1]
        k, path = K - 1, [K - 1]
        while k >= 0:
            a, a_next = ext[k + 1], ext[k]
            t = jnp.asarray([grid.timesteps[k]])

            def sq_norm_f(xx):
                eps = eps_fn(xx, t)
                c1 = 1 / (math.sqrt(a) * (math.sqrt(a_next) + math.sqrt(a)))
                c2 = -1 / (math.sqrt(1 - a_next) + math.sqrt(1 - a)) - math.sqrt((1 - a) / a) / (
                    math.sqrt(a_next) + math.sqrt(a)
                )
                return jnp.sum((c1 * xx + c2 * eps) ** 2)

            g = jax.grad(sq_norm_f)(x)
            gnorm = float(jnp.sqrt(jnp.sum(g**2)))
            h_rule = math.sqrt(tau / gnorm) if gnorm > 0 else math.inf
            if h_rule >= 1 - a:
                nxt = -1
            else:
                a_goal = a + h_rule
                nxt = k - 1  # at least one step
                for j in range(-1, k):  # first j has the largest alpha-bar
                    if ext[j + 1] <= a_goal:
                        nxt = min(j, k - 1)
                        break
            a_new = ext[nxt + 1]
            eps = eps_fn(x, t)
            x = math.sqrt(a_new / a) * x + (math.sqrt(1 - a_new) - math.sqrt(a_new * (1 - a) / a)) * eps
            k = nxt
            path.append(k)
        paths.append(path)
        finals.append(x[0])
    return paths, np.stack(finals)


@pytest.mark.parametrize("tau", [0.05, 0.4, 3.0])
def test_paths_equal_the_slow_reference_loop(linear, tau):
    with jax.enable_x64(True):
        gm = R.testing.GaussianMixture.random(1, 6, 5, linear, dtype=jnp.float64)
        grid = linear.respace(60)
        noise = jax.random.normal(jax.random.key(2), (12, 6), jnp.float64)
        res = R.adaptive_paths(gm, grid, noise, tau)
        want_paths, want_x = slow_reference_paths(gm, grid, noise, tau)
        for b, wp in enumerate(want_paths):
            got = np.asarray(res.paths[b]).tolist()
            assert got[: len(wp)] == wp, f"sample {b}"
            assert all(v == -1 for v in got[len(wp) :])
            assert int(res.nfe[b]) == len(wp) - 1
        np.testing.assert_allclose(res.samples, want_x, rtol=1e-9, atol=1e-9)
        assert bool(jnp.all(res.finished))


def test_path_properties(mixture, grid, noise8):
    res = R.adaptive_paths(mixture, grid, noise8, 0.3)
    p = np.asarray(res.paths)
    assert p.shape == (64, grid.K + 1)
    assert np.all(p[:, 0] == grid.K - 1)
    for b in range(p.shape[0]):
        m = int(res.nfe[b])
        assert p[b, m] == -1 and np.all(p[b, m:] == -1)
        assert np.all(np.diff(p[b, : m + 1]) <= -1)  # strictly decreasing, >= one grid step
    assert int(res.iterations) == int(res.nfe.max())
    assert np.all(np.asarray(res.nonfinite_step) == -1)
    assert np.all(np.isfinite(np.asarray(res.samples)))


def test_paths_are_per_sample(mixture, grid, noise8):
    full = R.adaptive_paths(mixture, grid, noise8, 0.3)
    sub = R.adaptive_paths(mixture, grid, noise8[jnp.asarray([5, 17, 40])], 0.3)
    np.testing.assert_array_equal(full.paths[jnp.asarray([5, 17, 40])], sub.paths)
    np.testing.assert_allclose(full.samples[jnp.asarray([5, 17, 40])], sub.samples, rtol=1e-5, atol=1e-6)


def test_larger_tau_takes_fewer_steps(mixture, grid, noise8):
    means = [float(R.adaptive_paths(mixture, grid, noise8, t).nfe.mean()) for t in (0.01, 0.1, 1.0, 10.0)]
    assert means == sorted(means, reverse=True) and means[0] > means[-1]


def test_max_steps_bounds_the_loop(mixture, grid, noise8):
    res = R.adaptive_paths(mixture, grid, noise8, 1e-4, max_steps=3)
    assert int(res.iterations) == 3 and not bool(res.finished.any())
    assert res.paths.shape == (64, 4)


def test_bad_inputs(mixture, grid, noise8):
    with pytest.raises(ValueError, match="tau"):
        R.adaptive_paths(mixture, grid, noise8, 0.0)
    with pytest.raises(ValueError, match="shape"):
        R.adaptive_paths(mixture, grid, noise8[0], 1.0)
    with pytest.raises(TypeError, match="incompatible shapes"):  # the model's own error
        R.adaptive_paths(mixture, grid, noise8[:, :5], 1.0)
    with pytest.raises(ValueError, match="returned shape"):
        R.adaptive_paths(lambda x, t: x[:, :2], grid, noise8, 1.0)
    with pytest.raises(TypeError, match="grid"):
        R.adaptive_paths(mixture, "grid", noise8, 1.0)
    with pytest.raises(TypeError, match="floating"):
        R.adaptive_paths(mixture, grid, jnp.ones((4, 8), jnp.int32), 1.0)


def test_chunked_paths_equal_one_run(mixture, grid, noise8):
    full = R.adaptive_paths(mixture, grid, noise8, 0.3)
    chunked = R.adaptive_paths(mixture, grid, noise8, 0.3, chunk_size=24)  # 24 + 24 + 16 (padded)
    np.testing.assert_array_equal(full.paths, chunked.paths)
    np.testing.assert_array_equal(full.nfe, chunked.nfe)
    np.testing.assert_allclose(full.samples, chunked.samples, rtol=1e-5, atol=1e-6)
    assert int(chunked.iterations) >= int(full.iterations)
    with pytest.raises(ValueError, match="chunk_size"):
        R.adaptive_paths(mixture, grid, noise8, 0.3, chunk_size=0)
