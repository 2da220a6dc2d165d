"""Writes the two tiny random U-Nets that the tests load instead of initialising them (eager
NNX initialisation compiles many small kernels: about 16 s per test process on 2 CPU cores,
against under 1 s to restore):

    python tests/data/make_tiny_models.py     # from the repository root

``tiny_unet``: 8x8x1, base 8 channels, multipliers (1, 2); ``tiny_cond_unet``: the same with
10 classes.  Their zero-initialised output layers are randomised (every parameter gets
``0.05 * N(0, 1)`` added), so that their outputs differ from zero and from each other.
"""

from pathlib import Path

import jax
from flax import nnx

from rbe_jax.zoo.checkpoint import save_model
from rbe_jax.zoo.nets import UNet, UNetConfig

HERE = Path(__file__).parent
TINY = UNetConfig(image_size=8, base_channels=8, channel_mults=(1, 2), attn_heads=2, num_groups=4)
TINY_COND = UNetConfig(image_size=8, base_channels=8, channel_mults=(1, 2), attn_heads=2, num_groups=4, num_classes=10)
SPEC = dict(kind="linear", T=1000, beta_start=1e-4, beta_end=0.02)


@jax.jit
def perturb(state, key):
    leaves, treedef = jax.tree_util.tree_flatten(state)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten([p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


def random_unet(cfg: UNetConfig, key: int) -> UNet:
    graphdef, state = nnx.split(UNet(cfg, nnx.Rngs(0)), nnx.Param)
    return nnx.merge(graphdef, perturb(state, jax.random.key(key)))


if __name__ == "__main__":
    for name, cfg, key in (("tiny_unet", TINY, 0), ("tiny_cond_unet", TINY_COND, 1)):
        print("wrote", save_model(HERE / name, random_unet(cfg, key), noise_schedule_spec=SPEC, meta={"made_by": "tests/data/make_tiny_models.py"}))
