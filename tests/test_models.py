import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import rbe_jax as R


class LinenEps(nn.Module):
    @nn.compact
    def __call__(self, x, t):
        h = jnp.concatenate([x, (t[:, None] / 1000.0).astype(x.dtype)], axis=-1)
        return nn.Dense(x.shape[-1])(nn.tanh(nn.Dense(16)(h)))


class NNXEps(nnx.Module):
    def __init__(self, dim, rngs):
        self.lin = nnx.Linear(dim + 1, dim, rngs=rngs)

    def __call__(self, x, t):
        return self.lin(jnp.concatenate([x, (t[:, None] / 1000.0).astype(x.dtype)], axis=-1))


def test_linen_apply_plugs_in_and_jits(grid, noise8):
    mod = LinenEps()
    variables = mod.init(jax.random.key(0), noise8, jnp.zeros((64,), jnp.int32))
    model = R.as_model(mod.apply, variables)
    sched = R.baseline_schedule(grid, 6, "logsnr")
    out = jax.jit(R.rbe_sample)(model, noise8, sched, R.ddim())
    # against the same loop written by hand with the Linen apply
    x = noise8
    for i in range(6):
        a, an = sched.alpha_bar[i], sched.alpha_bar[i + 1]
        eps = mod.apply(variables, x, jnp.full((64,), sched.timesteps[i], jnp.float32))
        x = np.sqrt(an / a) * x + (np.sqrt(1 - an) - np.sqrt(an * (1 - a) / a)) * eps
    np.testing.assert_allclose(out, x, rtol=1e-4, atol=1e-5)
    res = R.adaptive_paths(model, grid, noise8, 1.0)
    assert bool(res.finished.all())


def test_nnx_module_is_a_model_as_is(grid, noise8):
    m = NNXEps(8, nnx.Rngs(0))
    assert R.as_model(m) is m
    sched = R.baseline_schedule(grid, 4, "uniform")
    a = jax.jit(R.rbe_sample)(m, noise8, sched)
    b = R.rbe_sample(m, noise8, sched)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("prediction", ["x0", "v", "score"])
def test_prediction_adapters_recover_eps_and_x0(mixture, linear, noise8, prediction):
    """Each prediction, written by hand from the mixture's exact eps, converts back to the
    same eps and x0 (VP: the model's x is the internal x)."""
    t = np.random.default_rng(0).integers(0, 1000, size=64)
    a = jnp.asarray(linear.alpha_bar, jnp.float32)[t][:, None]
    alpha, sigma = jnp.sqrt(a), jnp.sqrt(1 - a)
    eps = mixture(noise8, jnp.asarray(t, jnp.float32))
    x0 = (noise8 - sigma * eps) / alpha
    outs = {"x0": lambda x, tt: (x - sigma * mixture(x, tt)) / alpha, "v": lambda x, tt: alpha * mixture(x, tt) - sigma * (x - sigma * mixture(x, tt)) / alpha, "score": lambda x, tt: -mixture(x, tt) / sigma}
    wrapped = R.as_model(outs[prediction], prediction=prediction, noise_schedule=linear)
    pt = linear.points(linear.log_snr[t])
    got = wrapped(noise8, R.core.noise.Point(*(jnp.asarray(v, jnp.float32) for v in pt)))
    np.testing.assert_allclose(got.eps, eps, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(got.x0, x0, rtol=2e-3, atol=2e-3)


def test_as_model_errors(linear):
    with pytest.raises(TypeError, match="callable"):
        R.as_model(3)
    with pytest.raises(ValueError, match="prediction"):
        R.as_model(lambda x, t: x, prediction="noise", noise_schedule=linear)
    with pytest.raises(ValueError, match="noise_schedule"):
        R.as_model(lambda x, t: x, prediction="x0")
    with pytest.raises(ValueError, match="continuous-time process"):
        R.as_model(lambda x, t: x, prediction="velocity", noise_schedule=linear)
    with pytest.raises(TypeError, match="NoiseSchedule"):
        R.as_model(lambda x, t: x, prediction="x0", noise_schedule=linear.alpha_bar)


def test_a_model_wrapped_for_one_process_refuses_another(mixture, linear, noise8):
    model = R.as_model(mixture, noise_schedule=linear)
    R.rbe_sample(model, noise8, R.baseline_schedule(linear.respace(100), 4, "uniform"))  # any grid of the process
    with pytest.raises(ValueError, match="wrapped for noise process"):
        R.rbe_sample(model, noise8, R.baseline_schedule(R.NoiseSchedule.cosine(1000), 4, "uniform"))


def test_quantize_feeds_integer_timesteps(mixture, linear, noise8):
    seen = []

    def table_model(x, t):
        jax.debug.callback(lambda v: seen.append(np.asarray(v)), t)
        return mixture(x, t.astype(jnp.float32))

    sched = R.baseline_schedule(linear, 4, "uniform")  # fractional timesteps 999, 749.25, ...
    R.rbe_sample(R.as_model(table_model, noise_schedule=linear, quantize=True), noise8, sched)
    assert all(v.dtype == np.int32 for v in seen)
    np.testing.assert_array_equal([v[0] for v in seen], np.round(sched.model_times).astype(int))
