"""The local-error dynamic program: its path search against brute force, its trajectories
against the reference solve, its one-step errors against a slow NumPy step, and its use as
a start of optimize_schedule."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

import rbe_jax as R
from rbe_jax.tuning.local_error import _best_path, _one_step_errors_jit, local_error_schedule, trajectory


@pytest.mark.parametrize("seed, N, nfe", [(0, 7, 3), (1, 9, 4), (2, 6, 5), (3, 8, 1)])
def test_best_path_is_the_cheapest_of_all_paths(seed, N, nfe):
    cost = np.random.default_rng(seed).uniform(0.1, 1.0, (N - 1, N))
    path = _best_path(cost, nfe)
    total = lambda p: sum(cost[a, b] for a, b in zip(p[:-1], p[1:]))
    brute = min(total((0, *mid, N - 1)) for mid in itertools.combinations(range(1, N - 1), nfe - 1))
    assert path[0] == 0 and path[-1] == N - 1 and len(path) == nfe + 1 and np.all(np.diff(path) > 0)
    assert total(path) == pytest.approx(brute, rel=1e-12)


def test_trajectory_keeps_the_reference_solve(mixture, grid, noise8):
    idx, states, end = trajectory(mixture, grid, noise8, steps=50, points=10)
    ref = R.reference_solution(mixture, grid, noise8, 50)
    np.testing.assert_allclose(end, ref, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(states[0], noise8)
    assert idx[0] == grid.K - 1 and states.shape == (idx.size, *noise8.shape) and np.all(np.diff(idx) < 0)
    # the kept state at the second point: the same 2M solve stopped there
    sched = R.core.schedule.grid_schedule(grid, 50)
    assert idx[1] == np.asarray(sched.indices)[50 // 10]


def test_one_step_errors_equal_a_slow_ddim_step(mixture, grid, noise8):
    idx, states, end = trajectory(mixture, grid, noise8, steps=40, points=8)
    ab = grid.alpha_bar[idx]
    pts = R.core.noise.Point(*(jnp.asarray(v[idx]) for v in grid.grid_points()))
    err = np.asarray(_one_step_errors_jit(R.as_model(mixture, noise_schedule=grid), states, end, pts))
    targets = np.concatenate([np.asarray(states, np.float64), np.asarray(end, np.float64)[None]])
    a_to, s_to = np.append(np.sqrt(ab), 1.0), np.append(np.sqrt(1 - ab), 0.0)
    for i, j in [(0, 1), (0, idx.size), (2, 5), (idx.size - 1, idx.size)]:
        x = np.asarray(states[i], np.float64)
        eps = np.asarray(mixture(jnp.asarray(states[i]), jnp.full((x.shape[0],), grid.timesteps[idx[i]], jnp.float32)), np.float64)
        x0 = (x - np.sqrt(1 - ab[i]) * eps) / np.sqrt(ab[i])
        pred = a_to[j] * x0 + s_to[j] * eps
        np.testing.assert_allclose(err[i, j], np.sqrt(np.mean((pred - targets[j]) ** 2, axis=1)), rtol=2e-4, atol=1e-6)


def test_local_error_schedule(mixture, linear, noise8):
    s = local_error_schedule(mixture, linear, noise8, 6, steps=200, points=40)
    s.validate(linear)
    assert s.nfe == 6 and s.method == "local_dp" and int(s.indices[0]) == 999 and int(s.indices[-1]) == -1
    assert s.info["points"] == 40 and s.info["model_evals"] == 240 and s.info["local_error"] > 0
    # a trajectory solved once and passed in gives the same schedule
    kept = trajectory(mixture, linear, noise8, steps=200, points=40)
    again = local_error_schedule(mixture, linear, noise8, 6, kept=kept)
    np.testing.assert_array_equal(again.indices, s.indices)
    with pytest.raises(ValueError, match="kept trajectory points"):
        local_error_schedule(mixture, linear, noise8, 45, kept=kept)
