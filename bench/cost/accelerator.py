"""Sampler overhead, compile time and calibration cost on a larger U-Net, for GPU/TPU runs.

    python bench/cost/accelerator.py            # on an accelerator: 32x32x3 and 64x64x3 U-Nets, tens of millions of parameters
    python bench/cost/accelerator.py --small    # the same measurements on small models (the default on a CPU; under 2 minutes)

Prints one JSON object per model:
- ``scan_overhead``: wall time of ``jax.jit(rbe_sample)`` at NFE n divided by n times one
  jitted model call on the same batch (1.0 = the sampler adds nothing; target <= 1.05);
- ``compile_s``: compile time of ``jax.jit(rbe_sample)`` against NFE (it should not grow:
  the steps are one ``lax.scan``);
- ``calibrate``: one ``calibrate`` call (cold, compilation included, and warm) as a multiple
  of one sampling run of the same batch (with ``--small``, for the first model only).
Weights are random: timings depend on the architecture, not on training.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np
from flax import nnx

import rbe_jax as R
from rbe_jax.zoo.nets import UNet, UNetConfig

LARGE = {
    "unet32x32x3": (UNetConfig(image_size=32, in_channels=3, base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2, attn_heads=4, num_groups=32), 64),
    "unet64x64x3": (UNetConfig(image_size=64, in_channels=3, base_channels=128, channel_mults=(1, 2, 3, 4), num_res_blocks=2, attn_heads=4, num_groups=32), 32),
}
SMALL = {
    "unet32x32x3-small": (UNetConfig(image_size=32, in_channels=3, base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1, attn_heads=2, num_groups=8), 8),
    "unet64x64x3-small": (UNetConfig(image_size=64, in_channels=3, base_channels=16, channel_mults=(1, 2, 2, 2), num_res_blocks=1, attn_heads=2, num_groups=8), 4),
}


def best_of(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return best


def measure(name: str, cfg: UNetConfig, batch: int, nfes: list[int], calib_nfe: int | None) -> dict:
    model = UNet(cfg, nnx.Rngs(0))
    params = sum(int(np.size(v)) for v in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))
    grid = R.NoiseSchedule.linear(1000).respace(100)
    x = jax.random.normal(jax.random.key(0), (batch, cfg.image_size, cfg.image_size, cfg.in_channels))
    t = np.full((batch,), 500, np.int32)
    call = jax.jit(lambda m, x, t: m(x, t))
    jax.block_until_ready(call(model, x, t))
    t_call = best_of(lambda: call(model, x, t))
    sample = jax.jit(R.rbe_sample)
    overhead, compile_s = {}, {}
    for n in nfes:
        sched = R.baseline_schedule(grid, n, "uniform")
        t0 = time.perf_counter()
        compiled = sample.lower(model, x, sched).compile()
        compile_s[n] = round(time.perf_counter() - t0, 2)
        jax.block_until_ready(compiled(model, x, sched))
        overhead[n] = round(best_of(lambda: compiled(model, x, sched)) / (n * t_call), 3)
    out = dict(
        model=name,
        params=params,
        batch=batch,
        device=f"{jax.devices()[0].platform} {jax.devices()[0].device_kind} x{jax.device_count()}",
        model_call_ms=round(1e3 * t_call, 3),
        scan_overhead=overhead,
        compile_s=compile_s,
    )
    if calib_nfe:
        sched = R.baseline_schedule(grid, calib_nfe, "uniform")
        t_sample = best_of(lambda: sample(model, x, sched, R.ddim()))
        t0 = time.perf_counter()
        R.calibrate(model, grid, x, calib_nfe)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        R.calibrate(model, grid, x, calib_nfe)
        warm = time.perf_counter() - t0
        out["calibrate"] = dict(nfe=calib_nfe, cold_s=round(cold, 2), warm_s=round(warm, 2), cold_x_sample=round(cold / t_sample, 1), warm_x_sample=round(warm / t_sample, 1))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="small models (default on a CPU)")
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--calib-nfe", type=int, default=8)
    args = ap.parse_args()
    small = args.small or jax.devices()[0].platform == "cpu"
    for i, (name, (cfg, batch)) in enumerate((SMALL if small else LARGE).items()):
        calib = args.calib_nfe if not small or i == 0 else None  # small: calibrate the first model only
        print(json.dumps(measure(name, cfg, batch, args.nfe, calib)), flush=True)


if __name__ == "__main__":
    main()
