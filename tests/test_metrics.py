import numpy as np


def test_frechet_distance_closed_form():
    from rbe_jax.zoo.metrics import frechet_distance

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 3)) * np.array([1.0, 2.0, 0.5])
    y = rng.normal(size=(20000, 3)) * np.array([1.0, 1.0, 0.5]) + np.array([0.3, 0.0, 0.0])
    # diagonal Gaussians: |dmu|^2 + sum (s_x - s_y)^2 = 0.09 + 1
    assert abs(frechet_distance(x, y) - 1.09) < 0.05
    assert frechet_distance(x, x) < 1e-8
