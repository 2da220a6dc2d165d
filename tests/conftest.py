import jax
import jax.numpy as jnp
import pytest

import rbe_jax as R


@pytest.fixture(scope="session")
def linear():
    return R.NoiseSchedule.linear(1000)


@pytest.fixture(scope="session")
def grid(linear):
    return linear.respace(100)


@pytest.fixture(scope="session")
def mixture(linear):
    """A sharp 8-d Gaussian mixture: the exact test bed of shared/RBE.md, small."""
    return R.testing.GaussianMixture.random(0, 8, 6, linear)


@pytest.fixture(scope="session")
def noise8():
    return jax.random.normal(jax.random.key(0), (64, 8), jnp.float32)
