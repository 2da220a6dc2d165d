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


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny random U-Net saved as a model directory (grid K=20), shared by the CLI and
    sampling-job tests."""
    from rbe_jax.zoo.checkpoint import save_model
    from test_checkpoint import SPEC, _random_tiny

    path = tmp_path_factory.mktemp("tiny") / "model"
    save_model(path, _random_tiny(), noise_schedule_spec=SPEC, meta={"grid_K": 20})
    return path
