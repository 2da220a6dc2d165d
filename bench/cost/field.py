"""Day-one costs, measured in one run: eager vs jitted sampling, calibration cost (cold and
warm) as multiples of one sampling run of the same batch, model traces per ``calibrate``
call, and the wall time of a repeated guided CLI call (the cached schedule).

    python bench/cost/field.py [--batch 64] [--nfe 10] [--out bench/results/field_costs]

Models: the shipped 16x16 digits U-Net and a 28x28 U-Net with random weights (the shape of
an MNIST DDPM; calibration cost depends on the architecture, not on the weights' quality,
though tau and the step counts do).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
from flax import nnx

import rbe_jax as R
from rbe_jax.zoo.checkpoint import load_model_info, pretrained_path
from rbe_jax.zoo.nets import UNet, UNetConfig


def timed(fn, repeat: int = 3) -> float:
    """Best wall time of ``repeat`` calls of ``fn`` (which blocks on its result)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def costs(name: str, model, grid, image_shape, batch: int, nfe: int) -> dict:
    noise = jax.random.normal(jax.random.key(0), (batch, *image_shape))
    sched = R.baseline_schedule(grid, nfe, "uniform")
    sample = jax.jit(R.rbe_sample)
    jax.block_until_ready(sample(model, noise, sched, R.ddim()))
    t_jit = timed(lambda: jax.block_until_ready(sample(model, noise, sched, R.ddim())))
    jax.block_until_ready(R.rbe_sample(model, noise, sched, R.ddim()))  # first eager call compiles
    t_eager = timed(lambda: jax.block_until_ready(R.rbe_sample(model, noise, sched, R.ddim())))
    traces: list = []
    # the model stays a traced argument (params=); the function counts its traces
    counted = R.as_model(lambda m, x, t: (traces.append(1), m(x, t))[1], model)
    t0 = time.perf_counter()
    s = R.calibrate(counted, grid, noise, nfe)
    cold = time.perf_counter() - t0
    traces_first = len(traces)
    t0 = time.perf_counter()
    s2 = R.calibrate(counted, grid, noise, nfe - 2)
    warm = time.perf_counter() - t0
    return dict(
        model=name,
        batch=batch,
        nfe=nfe,
        sample_jit_s=round(t_jit, 4),
        sample_eager_s=round(t_eager, 4),
        eager_over_jit=round(t_eager / t_jit, 2),
        calibrate_cold_s=round(cold, 2),
        calibrate_warm_s=round(warm, 2),
        calibrate_cold_x=round(cold / t_jit, 1),
        calibrate_warm_x=round(warm / t_jit, 1),
        traces_first_calibrate=traces_first,
        traces_second_calibrate=len(traces) - traces_first,
        adaptive_runs=[s.info["search_runs"] + 1, s2.info["search_runs"] + 1],
    )


def guided_cli(nfe: int = 6, guidance: float = 3.0) -> dict:
    """Two identical guided CLI calls (the first calibrates and caches, the second reuses)."""
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, RBE_JAX_CACHE=str(Path(d) / "cache"))
        cmd = [sys.executable, "-m", "rbe_jax.app.cli", "sample", "--label", "3", "--guidance", str(guidance), "--nfe", str(nfe), "--n", "16", "--out", str(Path(d) / "g.png")]
        walls = []
        for _ in range(2):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, capture_output=True)
            walls.append(round(time.perf_counter() - t0, 1))
    return dict(nfe=nfe, guidance=guidance, first_call_s=walls[0], second_call_s=walls[1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--nfe", type=int, default=10)
    p.add_argument("--out", default="bench/results/field_costs")
    args = p.parse_args()
    info = load_model_info(pretrained_path("digits"))
    rows = [costs("digits 16x16 (shipped)", R.load_pretrained("digits"), info.default_grid, info.image_shape, args.batch, args.nfe)]
    print(json.dumps(rows[-1]), flush=True)
    cfg = UNetConfig(image_size=28, base_channels=32, channel_mults=(1, 2, 2), num_groups=8)
    m28 = UNet(cfg, nnx.Rngs(0))
    rows.append(costs("28x28 U-Net (random weights)", m28, R.NoiseSchedule.linear(1000).respace(100), (28, 28, 1), args.batch, args.nfe))
    print(json.dumps(rows[-1]), flush=True)
    cli = guided_cli()
    print(json.dumps(cli), flush=True)
    meta = dict(date=datetime.date.today().isoformat(), machine=f"{platform.machine()} {jax.devices()[0].device_kind} x{jax.device_count()}, jax {jax.__version__}")
    Path(args.out + ".json").write_text(json.dumps(dict(meta=meta, rows=rows, guided_cli=cli), indent=1) + "\n")
    L = [f"# Day-one costs ({meta['date']}, {meta['machine']})", "", "`python bench/cost/field.py`; times are the best of 3 (sampling) or single runs (calibration).", "",
         "| model | batch | NFE | jitted sample (s) | eager sample (s) | eager / jit | calibrate cold (s, x sample) | calibrate warm (s, x sample) | model traces, 1st / 2nd calibrate |",
         "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['model']} | {r['batch']} | {r['nfe']} | {r['sample_jit_s']} | {r['sample_eager_s']} | {r['eager_over_jit']} | {r['calibrate_cold_s']} ({r['calibrate_cold_x']}x) | {r['calibrate_warm_s']} ({r['calibrate_warm_x']}x) | {r['traces_first_calibrate']} / {r['traces_second_calibrate']} |")
    L += ["", f"Guided CLI (`rbe-jax sample --label 3 --guidance {cli['guidance']:g} --nfe {cli['nfe']} --n 16`, fresh cache): first call {cli['first_call_s']} s (calibrates and caches), second identical call {cli['second_call_s']} s."]
    Path(args.out + ".md").write_text("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
