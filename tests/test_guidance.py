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


def _pt(ns, t):
    """The Point of the table's timesteps ``t`` ``(B,)``."""
    return R.core.noise.Point(*(jnp.asarray(v, jnp.float32)[jnp.asarray(t)] for v in ns.grid_points()))


def _x0(model, x, t, linear):
    a = jnp.asarray(linear.alpha_bar, jnp.float32)[t][:, None]
    return (x - jnp.sqrt(1 - a) * model(x, jnp.asarray(t, jnp.float32))) / jnp.sqrt(a)


def test_clip_denoised_clips_x0_and_keeps_in_range_eps(wide, linear):
    x = jax.random.normal(jax.random.key(0), (32, 4))
    t = jnp.asarray(np.random.default_rng(0).integers(0, 400, 32), jnp.int32)
    clipped = R.clip_denoised(wide, linear, -0.5, 0.5)
    out, x0 = clipped(x, _pt(linear, t)), _x0(wide, x, t, linear)
    assert float(jnp.max(jnp.abs(out.x0))) <= 0.5 + 1e-6
    np.testing.assert_allclose(out.x0, jnp.clip(x0, -0.5, 0.5), atol=2e-3)
    a = jnp.asarray(linear.alpha_bar, jnp.float32)[t][:, None]
    np.testing.assert_allclose(out.eps, (x - jnp.sqrt(a) * out.x0) / jnp.sqrt(1 - a), rtol=1e-4, atol=1e-4)  # eps re-derived (1/sigma amplifies float32 rounding)
    loose = R.clip_denoised(wide, linear, -5, 5)  # nothing to clip: the model is unchanged
    np.testing.assert_allclose(loose(x, _pt(linear, t)).eps, wide(x, jnp.asarray(t, jnp.float32)), rtol=1e-4, atol=1e-4)


def test_dynamic_thresholding(wide, linear):
    x = 3.0 * jax.random.normal(jax.random.key(1), (16, 4))
    t = jnp.full((16,), 30, jnp.int32)
    dyn = R.clip_denoised(wide, linear, dynamic_quantile=0.5)
    x0 = _x0(wide, x, t, linear)
    s = jnp.maximum(jnp.quantile(jnp.abs(x0), 0.5, axis=1), 1.0)[:, None]
    np.testing.assert_allclose(dyn(x, _pt(linear, t)).x0, jnp.clip(x0, -s, s) / s, atol=2e-3)


def test_clipping_inside_the_backward_error(wide, linear):
    """The indicator of the clipped model equals the explicit-Jacobian value through the clip."""
    with jax.enable_x64(True):
        gm = R.testing.GaussianMixture.create([1.0, 1.0], [[-0.9] * 3, [0.9] * 3], [[0.05] * 3] * 2, linear, dtype=jnp.float64)
        clipped = R.clip_denoised(gm, linear, -0.5, 0.5)
        g = linear.respace(50)
        ext = jnp.asarray(g.alpha_bar_ext)
        k = jnp.asarray([30, 10, 3, 1])
        x = jax.random.normal(jax.random.key(2), (4, 3), jnp.float64)
        a, an = ext[k + 1], ext[k]
        pt = R.core.noise.Point(*(jnp.asarray(v)[k] for v in g.grid_points()))
        be = R.backward_error(clipped, x, pt, a, an)
        for b in range(4):
            pb = R.core.noise.Point(*(v[b : b + 1] for v in pt))
            fb = lambda xb: R.rbe.one_step_field(xb[None], clipped(xb[None], pb).eps, a[b : b + 1], an[b : b + 1])[0]
            J = jax.jacfwd(fb)(x[b])
            np.testing.assert_allclose(be.indicator[b], np.linalg.norm(2 * J.T @ fb(x[b])), rtol=1e-9)
        plain = R.backward_error(R.as_model(gm, noise_schedule=linear), x, pt, a, an)
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


def _table_alpha_bar(gm, t):
    """The mixture's VP table alpha-bar at the timesteps ``t`` (table entries)."""
    return jnp.asarray(gm.noise_schedule.alpha_bar, jnp.float32)[jnp.round(t).astype(jnp.int32)]


def _component_posteriors(gm, x, a):
    """log p(component | x) ``(B, M)`` at VP alpha-bar ``a`` ``(B,)``."""
    logp = jnp.stack([gm.replace(weights=jnp.ones((1,)), means=gm.means[k : k + 1], stds=gm.stds[k : k + 1]).log_prob(x, a) for k in range(gm.means.shape[0])], axis=1)
    return jax.nn.log_softmax(jnp.log(gm.weights)[None] + logp, axis=-1)


class _LogPGrad(struct.PyTreeNode):
    """grad_x log p(y | x_a) for the mixture's exact posterior over its components."""

    gm: R.testing.GaussianMixture
    label: int = struct.field(pytree_node=False)

    def __call__(self, x, t):
        a = _table_alpha_bar(self.gm, t)
        return jax.grad(lambda x_: jnp.sum(_component_posteriors(self.gm, x_, a)[:, self.label]))(x)


def _log_p_grad(gm, label):
    return _LogPGrad(gm=gm, label=label)


def test_classifier_guidance_formula(wide, linear):
    x = jax.random.normal(jax.random.key(4), (8, 4))
    t = jnp.full((8,), 500.0, jnp.float32)
    g = R.classifier_guidance(wide, _log_p_grad(wide, 0), linear, scale=2.0)
    sigma = jnp.sqrt(1 - linear.alpha_bar[500])
    want = wide(x, t) - sigma * 2.0 * _log_p_grad(wide, 0)(x, t)
    np.testing.assert_allclose(g(x, _pt(linear, jnp.full((8,), 500))).eps, want, rtol=1e-5, atol=1e-5)


class _CondMixture(struct.PyTreeNode):
    """A conditional exact model: label k -> component k alone; label -1 -> the mixture."""

    gm: R.testing.GaussianMixture

    def __call__(self, x, t, y):
        a = _table_alpha_bar(self.gm, t)
        full = self.gm.eps_at(x, a)
        per = []
        for k in range(self.gm.means.shape[0]):
            one = self.gm.replace(weights=jnp.ones((1,)), means=self.gm.means[k : k + 1], stds=self.gm.stds[k : k + 1])
            per.append(one.eps_at(x, a))
        per = jnp.stack(per)  # (M, B, D)
        pick = per[jnp.clip(y, 0, None), jnp.arange(x.shape[0])]
        return jnp.where((y < 0)[:, None], full, pick)


def test_classifier_free_guidance(wide, linear):
    cond = _CondMixture(gm=wide)
    x = jax.random.normal(jax.random.key(5), (8, 4))
    t = jnp.full((8,), 300.0, jnp.float32)
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
    with pytest.raises(ValueError, match="wrapped for noise process"):
        R.clip_denoised(R.as_model(wide, noise_schedule=linear), R.NoiseSchedule.cosine(1000))
