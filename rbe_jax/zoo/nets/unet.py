"""A small DDPM-style U-Net in Flax NNX that predicts eps.

Sinusoidal time embedding + MLP, residual blocks with GroupNorm, self-attention at the
lowest resolution, skip connections.  Images are NHWC: ``x`` ``(B, H, W, C)``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["UNetConfig", "UNet", "timestep_embedding"]


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """Architecture of :class:`UNet` (JSON-serialisable).

    Attributes:
      image_size: H = W of the input.
      in_channels: C of the input (and of the eps output).
      base_channels: channels at the top resolution.
      channel_mults: channel multiplier per resolution (each after the first halves H, W).
      num_res_blocks: residual blocks per resolution on the way down (one more on the way up).
      attn_heads: heads of the self-attention at the lowest resolution (and in the middle).
      num_groups: GroupNorm groups.
      num_train_timesteps: T, used to scale the time embedding.
      num_classes: 0 for an unconditional model; else the model takes labels
        ``y`` in ``[0, num_classes]``, where ``num_classes`` itself is the "no label" class
        (trained by label dropout, used by classifier-free guidance).
    """

    image_size: int = 16
    in_channels: int = 1
    base_channels: int = 16
    channel_mults: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 1
    attn_heads: int = 4
    num_groups: int = 8
    num_train_timesteps: int = 1000
    num_classes: int = 0

    def __post_init__(self):
        object.__setattr__(self, "channel_mults", tuple(int(m) for m in self.channel_mults))
        bounds = dict(image_size=(1, 4096), in_channels=(1, 64), base_channels=(1, 4096), num_res_blocks=(1, 64), attn_heads=(1, 256),
                      num_groups=(1, 4096), num_train_timesteps=(1, 10**6), num_classes=(0, 10**6))
        for name, (lo, hi) in bounds.items():  # bounded: a config read from a file allocates from these
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")
        if not 1 <= len(self.channel_mults) <= 8 or not all(1 <= m <= 64 for m in self.channel_mults):
            raise ValueError(f"channel_mults must be 1 to 8 integers in [1, 64], got {list(self.channel_mults)}")
        down = 2 ** (len(self.channel_mults) - 1)
        if self.image_size % down:
            raise ValueError(f"image_size {self.image_size} must be divisible by {down} for {len(self.channel_mults)} levels")
        for m in self.channel_mults:
            if (self.base_channels * m) % self.num_groups:
                raise ValueError("every level's channel count must be divisible by num_groups")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UNetConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown UNetConfig fields: {sorted(unknown)}")
        return cls(**d)


def timestep_embedding(t: jax.Array, dim: int, scale: float = 1.0, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding ``(B, dim)`` of timesteps ``t`` ``(B,)`` (DDPM / Transformer)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = (t.astype(jnp.float32) * scale)[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class ResBlock(nnx.Module):
    def __init__(self, cin: int, cout: int, temb: int, groups: int, rngs: nnx.Rngs):
        self.norm1 = nnx.GroupNorm(cin, num_groups=groups, rngs=rngs)
        self.conv1 = nnx.Conv(cin, cout, (3, 3), rngs=rngs)
        self.temb = nnx.Linear(temb, cout, rngs=rngs)
        self.norm2 = nnx.GroupNorm(cout, num_groups=groups, rngs=rngs)
        self.conv2 = nnx.Conv(cout, cout, (3, 3), kernel_init=nnx.initializers.zeros_init(), rngs=rngs)
        self.skip = nnx.Conv(cin, cout, (1, 1), rngs=rngs) if cin != cout else None

    def __call__(self, x, emb):
        h = self.conv1(nnx.silu(self.norm1(x)))
        h = h + self.temb(nnx.silu(emb))[:, None, None, :]
        h = self.conv2(nnx.silu(self.norm2(h)))
        return h + (self.skip(x) if self.skip is not None else x)


class AttnBlock(nnx.Module):
    def __init__(self, ch: int, heads: int, groups: int, rngs: nnx.Rngs):
        self.norm = nnx.GroupNorm(ch, num_groups=groups, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(
            num_heads=heads, in_features=ch, decode=False, out_kernel_init=nnx.initializers.zeros_init(), rngs=rngs
        )

    def __call__(self, x):
        B, H, W, C = x.shape
        h = self.norm(x).reshape(B, H * W, C)
        return x + self.attn(h).reshape(B, H, W, C)


class UNet(nnx.Module):
    """eps-prediction U-Net: ``UNet(config, rngs)(x, t) -> eps``, ``x`` ``(B, H, W, C)``,
    ``t`` ``(B,)`` original timesteps.  A class-conditional model (``num_classes > 0``) also
    takes labels, ``model(x, t, y)``; without ``y`` it is the unconditional ("no label") model."""

    def __init__(self, config: UNetConfig, rngs: nnx.Rngs):
        self.config = config
        c = config
        ch, g = c.base_channels, c.num_groups
        temb = 4 * ch
        self.temb1 = nnx.Linear(ch, temb, rngs=rngs)
        self.temb2 = nnx.Linear(temb, temb, rngs=rngs)
        self.label_emb = nnx.Embed(c.num_classes + 1, temb, rngs=rngs) if c.num_classes > 0 else None
        self.conv_in = nnx.Conv(c.in_channels, ch, (3, 3), rngs=rngs)
        n_levels = len(c.channel_mults)
        down, skips_ch, cur = [], [ch], ch
        for lvl, m in enumerate(c.channel_mults):
            for _ in range(c.num_res_blocks):
                down.append(ResBlock(cur, ch * m, temb, g, rngs))
                cur = ch * m
                if lvl == n_levels - 1:
                    down.append(AttnBlock(cur, c.attn_heads, g, rngs))
                skips_ch.append(cur)
            if lvl != n_levels - 1:
                down.append(nnx.Conv(cur, cur, (3, 3), strides=(2, 2), rngs=rngs))
                skips_ch.append(cur)
        self.down = nnx.List(down)
        self.mid1 = ResBlock(cur, cur, temb, g, rngs)
        self.mid_attn = AttnBlock(cur, c.attn_heads, g, rngs)
        self.mid2 = ResBlock(cur, cur, temb, g, rngs)
        up = []
        for lvl, m in reversed(list(enumerate(c.channel_mults))):
            for _ in range(c.num_res_blocks + 1):
                up.append(ResBlock(cur + skips_ch.pop(), ch * m, temb, g, rngs))
                cur = ch * m
                if lvl == n_levels - 1:
                    up.append(AttnBlock(cur, c.attn_heads, g, rngs))
            if lvl != 0:
                up.append(nnx.Conv(cur, cur, (3, 3), rngs=rngs))  # after a nearest-neighbour 2x upsample
        self.up = nnx.List(up)
        self.norm_out = nnx.GroupNorm(cur, num_groups=g, rngs=rngs)
        self.conv_out = nnx.Conv(cur, c.in_channels, (3, 3), kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

    def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array | None = None) -> jax.Array:
        c = self.config
        emb = timestep_embedding(t, c.base_channels, scale=1000.0 / c.num_train_timesteps)
        emb = self.temb2(nnx.silu(self.temb1(emb)))
        if self.label_emb is not None:
            if y is None:
                y = jnp.full((x.shape[0],), c.num_classes, jnp.int32)
            emb = emb + self.label_emb(y)
        elif y is not None:
            raise ValueError("this U-Net is unconditional (num_classes=0); it takes no labels")
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
                hs.append(h)
            elif isinstance(layer, AttnBlock):
                h = layer(h)
                hs[-1] = h
            else:  # strided conv: downsample
                h = layer(h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(jnp.concatenate([h, hs.pop()], axis=-1), emb)
            elif isinstance(layer, AttnBlock):
                h = layer(h)
            else:
                B, H, W, C = h.shape
                h = layer(jax.image.resize(h, (B, 2 * H, 2 * W, C), "nearest"))
        return self.conv_out(nnx.silu(self.norm_out(h)))
