"""x0 clipping, dynamic thresholding, classifier and classifier-free guidance as model
wrappers, checked against direct formulas and inside the backward error and calibration."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

import rbe_jax as R


@pytest.fixture(scope="module")
def wide(linear):
    """Two components far outside [-0.5, 0.5], so clipping to that range is active."""
    return R.testing.GaussianMixture.create([1.0, 1.0], [[-0.9] * 4, [0.9] * 4], [[0.05] * 4, [0.05] * 4], linear)


def _x0(model, x, t, linear):
    a = jnp.asarray(linear.alpha_bar, jnp.float32)[t][:, None]
    return (x - jnp.sqrt(1 - a) * model(x, t)) / jnp.sqrt(a)


def test_clip_denoised_clips_x0_and_keeps_in_range_eps(wide, linear):
    x = jax.random.normal(jax.random.key(0), (32, 4))
    t = jnp.asarray(np.random.default_rng(0).integers(0, 400, 32), jnp.int32)
    clipped = R.clip_denoised(wide, linear, -0.5, 0.5)
    x0c, x0 = _x0(clipped, x, t, linear), _x0(wide, x, t, linear)
    assert float(jnp.max(jnp.abs(x0c))) <= 0.5 + 1e-3
    np.testing.assert_allclose(x0c, jnp.clip(x0, -0.5, 0.5), atol=2e-3)
    loose = R.clip_denoised(wide, linear, -5, 5)  # nothing to clip: the model is unchanged
    np.testing.assert_allclose(loose(x, t), wide(x, t), rtol=1e-4, atol=1e-4)


def test_dynamic_thresholding(wide, linear):
    x = 3.0 * jax.random.normal(jax.random.key(1), (16, 4))
    t = jnp.full((16,), 30, jnp.int32)
    dyn = R.clip_denoised(wide, linear, dynamic_quantile=0.5)
    x0 = _x0(wide, x, t, linear)
    s = jnp.maximum(jnp.quantile(jnp.abs(x0), 0.5, axis=1), 1.0)[:, None]
    np.testing.assert_allclose(_x0(dyn, x, t, linear), jnp.clip(x0, -s, s) / s, atol=2e-3)


def test_clipping_inside_the_backward_error(wide, linear):
    """The indicator of the clipped model equals the explicit-Jacobian value through the clip."""
    with jax.enable_x64(True):
        gm = R.testing.GaussianMixture.create([1.0, 1.0], [[-0.9] * 3, [0.9] * 3], [[0.05] * 3] * 2, linear, dtype=jnp.float64)
        clipped = R.ClipDenoised(model=gm, alpha_bar=jnp.asarray(linear.alpha_bar), lo=-0.5, hi=0.5)
        g = linear.respace(50)
        ext = jnp.asarray(g.alpha_bar_ext)
        k = jnp.asarray([30, 10, 3, 1])
        x = jax.random.normal(jax.random.key(2), (4, 3), jnp.float64)
        a, an, t = ext[k + 1], ext[k], jnp.asarray(g.timesteps)[k]
        be = R.backward_error(clipped, x, t, a, an)
        for b in range(4):
            fb = lambda xb: R.one_step_field(xb[None], clipped(xb[None], t[b : b + 1]), a[b : b + 1], an[b : b + 1])[0]
            J = jax.jacfwd(fb)(x[b])
            np.testing.assert_allclose(be.indicator[b], np.linalg.norm(2 * J.T @ fb(x[b])), rtol=1e-9)
        plain = R.backward_error(gm, x, t, a, an)
        assert not np.allclose(be.indicator, plain.indicator)


def test_calibration_with_clipping_and_guidance(wide, linear):
    grid = linear.respace(100)
    noise = jax.random.normal(jax.random.key(3), (96, 4))
    clipped = R.clip_denoised(wide, linear, -0.5, 0.5)
    s_clip = R.calibrate(clipped, grid, noise, 6)
    s_plain = R.calibrate(wide, grid, noise, 6)
    assert s_clip.nfe == s_plain.nfe == 6 and s_clip.tau != s_plain.tau
    out = R.rbe_sample(clipped, noise, s_clip)
    assert float(jnp.max(jnp.abs(out))) <= 0.5 + 1e-3  # the last step returns the clipped x0
    guided = R.classifier_guidance(wide, _log_p_grad(wide, 1), linear, scale=3.0)
    s_guided = R.calibrate(guided, grid, noise, 6)
    assert s_guided.nfe == 6
    assert float(jnp.mean(R.rbe_sample(guided, noise, s_guided) > 0)) > float(jnp.mean(R.rbe_sample(wide, noise, s_plain) > 0)) + 0.2


class _LogPGrad(struct.PyTreeNode):
    """grad_x log p(y | x_a) for the mixture's exact posterior over its components."""

    gm: R.testing.GaussianMixture
    label: int = struct.field(pytree_node=False)

    def __call__(self, x, t):
        a = self.gm.alpha_bar[t]

        def log_post(x_):
            logp, _, _ = self.gm._component_log_probs(x_.reshape(x_.shape[0], -1), a)
            return jnp.sum(jax.nn.log_softmax(logp, axis=-1)[:, self.label])

        return jax.grad(log_post)(x)


def _log_p_grad(gm, label):
    return _LogPGrad(gm=gm, label=label)


def test_classifier_guidance_formula(wide, linear):
    x = jax.random.normal(jax.random.key(4), (8, 4))
    t = jnp.full((8,), 500, jnp.int32)
    g = R.classifier_guidance(wide, _log_p_grad(wide, 0), linear, scale=2.0)
    sigma = jnp.sqrt(1 - linear.alpha_bar[500])
    np.testing.assert_allclose(g(x, t), wide(x, t) - sigma * 2.0 * _log_p_grad(wide, 0)(x, t), rtol=1e-5, atol=1e-5)


class _CondMixture(struct.PyTreeNode):
    """A conditional exact model: label k -> component k alone; label -1 -> the mixture."""

    gm: R.testing.GaussianMixture

    def __call__(self, x, t, y):
        a = self.gm.alpha_bar[t]
        full = self.gm.eps_at(x, a)
        per = []
        for k in range(self.gm.means.shape[0]):
            one = R.testing.GaussianMixture(
                weights=jnp.ones((1,)), means=self.gm.means[k : k + 1], stds=self.gm.stds[k : k + 1], alpha_bar=self.gm.alpha_bar
            )
            per.append(one.eps_at(x, a))
        per = jnp.stack(per)  # (M, B, D)
        pick = per[jnp.clip(y, 0, None), jnp.arange(x.shape[0])]
        return jnp.where((y < 0)[:, None], full, pick)


def test_classifier_free_guidance(wide, linear):
    cond = _CondMixture(gm=wide)
    x = jax.random.normal(jax.random.key(5), (8, 4))
    t = jnp.full((8,), 300, jnp.int32)
    cfg = R.ClassifierFreeGuidance(model=cond, label=1, scale=2.0)
    want = 3.0 * cond(x, t, jnp.ones(8, jnp.int32)) - 2.0 * cond(x, t, -jnp.ones(8, jnp.int32))
    np.testing.assert_allclose(cfg(x, t), want, rtol=1e-5, atol=1e-5)
    grid = linear.respace(100)
    noise = jax.random.normal(jax.random.key(6), (64, 4))
    s = R.calibrate(cfg, grid, noise, 8)
    out = jax.jit(R.rbe_sample)(cfg, noise, s)
    assert float(jnp.mean(out > 0)) > 0.95  # label 1 is the component at +0.9


def test_wrapper_argument_errors(wide, linear):
    with pytest.raises(ValueError, match="lo < hi"):
        R.clip_denoised(wide, linear, 1.0, -1.0)
    with pytest.raises(ValueError, match="dynamic_quantile"):
        R.clip_denoised(wide, linear, dynamic_quantile=1.5)
    with pytest.raises(ValueError, match="full training schedule"):
        R.clip_denoised(wide, linear.respace(10))
