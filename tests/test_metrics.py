import numpy as np


def test_frechet_distance_closed_form():
    from rbe_jax.zoo.metrics import frechet_distance

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 3)) * np.array([1.0, 2.0, 0.5])
    y = rng.normal(size=(20000, 3)) * np.array([1.0, 1.0, 0.5]) + np.array([0.3, 0.0, 0.0])
    # diagonal Gaussians: |dmu|^2 + sum (s_x - s_y)^2 = 0.09 + 1
    assert abs(frechet_distance(x, y) - 1.09) < 0.05
    assert frechet_distance(x, x) < 1e-8


def test_digit_classifier_learns_the_digits():
    import pytest

    pytest.importorskip("sklearn")
    from rbe_jax.zoo.data import load_digits
    from rbe_jax.zoo.metrics import train_digit_classifier

    x, y = load_digits(16)
    clf = train_digit_classifier(x, y, steps=300)
    assert clf.holdout_accuracy > 0.9
    f, p = clf.features_and_probs(x[:50])
    assert f.shape == (50, 64) and p.shape == (50, 10)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    noise = np.random.default_rng(0).uniform(-1, 1, size=(200, 16, 16, 1)).astype(np.float32)
    assert (clf.features_and_probs(noise)[1].max(1) >= 0.9).mean() < (p.max(1) >= 0.9).mean()
