import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

pytest.importorskip("sklearn")

from rbe_jax.zoo.data import load_digits
from rbe_jax.zoo.nets import UNet, UNetConfig
from rbe_jax.zoo.train import TrainConfig, train

TINY = UNetConfig(image_size=8, base_channels=8, channel_mults=(1, 2), attn_heads=2, num_groups=4)


@pytest.fixture(scope="module")
def digits8():
    x, y = load_digits(8)
    return x, y


def test_digits_data():
    x, y = load_digits(16)
    assert x.shape == (1797, 16, 16, 1) and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() == 1.0
    assert sorted(np.unique(y).tolist()) == list(range(10))


def _eval_loss(graphdef, params, data, cfg):
    """A fixed-batch, fixed-noise loss: comparable before and after training."""
    key = jax.random.key(99)
    t = jax.random.randint(key, (256,), 0, 1000)
    noise = jax.random.normal(jax.random.fold_in(key, 1), (256, *data.shape[1:]))
    a = jnp.asarray(cfg.noise_schedule().alpha_bar, jnp.float32)[t][:, None, None, None]
    x0 = jnp.asarray(data[:256])
    model = nnx.merge(graphdef, params)
    return float(jnp.mean((model(jnp.sqrt(a) * x0 + jnp.sqrt(1 - a) * noise, t) - noise) ** 2))


@pytest.mark.slow
def test_tiny_training_lowers_the_loss_and_resumes_exactly(tmp_path, digits8):
    x, _ = digits8
    cfg = TrainConfig(steps=40, batch_size=32, lr=3e-3, warmup_steps=5, checkpoint_every=10, seed=3)
    g0, s0, _ = train(UNet(TINY, nnx.Rngs(0)), x, cfg, tmp_path / "a", progress=False, stop_after=0)
    before = _eval_loss(g0, s0.params, x, cfg)
    # uninterrupted
    g, full, losses = train(UNet(TINY, nnx.Rngs(0)), x, cfg, tmp_path / "a", progress=False)
    assert int(full.step) == 40 and len(losses) == 40
    after = _eval_loss(g, full.params, x, cfg)
    assert after < 0.8 * before, (before, after)
    # interrupted after 17 steps (last checkpoint at 17), then resumed from the checkpoint
    _, part, l1 = train(UNet(TINY, nnx.Rngs(0)), x, cfg, tmp_path / "b", progress=False, stop_after=17)
    assert int(part.step) == 17 and len(l1) == 17
    _, resumed, l2 = train(UNet(TINY, nnx.Rngs(5)), x, cfg, tmp_path / "b", progress=False)
    assert int(resumed.step) == 40 and len(l2) == 23
    for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(losses, l1 + l2)


def test_workdir_with_another_config_is_refused(tmp_path, digits8):
    x, _ = digits8
    cfg = TrainConfig(steps=2, batch_size=8, checkpoint_every=1)
    train(UNet(TINY, nnx.Rngs(0)), x, cfg, tmp_path, progress=False)
    with pytest.raises(ValueError, match="another config"):
        train(UNet(TINY, nnx.Rngs(0)), x, TrainConfig(steps=3, batch_size=8), tmp_path, progress=False)


def test_conditional_training_step_uses_labels(tmp_path, digits8):
    x, y = digits8
    cfg = TrainConfig(steps=3, batch_size=16, checkpoint_every=3)
    cond = UNetConfig(**{**TINY.__dict__, "num_classes": 10})
    g, state, losses = train(UNet(cond, nnx.Rngs(0)), x, cfg, tmp_path, labels=y, progress=False)
    assert int(state.step) == 3 and all(np.isfinite(losses))
    with pytest.raises(ValueError, match="needs labels"):
        train(UNet(cond, nnx.Rngs(0)), x, cfg, tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="unconditional"):
        UNet(TINY, nnx.Rngs(0))(jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,), jnp.int32), jnp.zeros((1,), jnp.int32))
