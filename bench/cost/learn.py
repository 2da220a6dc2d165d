"""Time to learn a schedule on a large U-Net (random weights): LD3's budget is minutes on one GPU.

    python bench/cost/learn.py            # on a GPU/TPU: the 32x32x3 U-Net of bench/cost/accelerator.py (tens of millions of parameters)
    python bench/cost/learn.py --small    # a small U-Net, for a CPU run of the same code

Prints one JSON object: the parameter count, the teacher's solve (100 calibration samples,
``--teacher-steps``) and ``learn_schedule`` for a 10-NFE UniPC schedule (``--steps``,
minibatch ``--batch``), each timed with compilation included, and the peak memory the device
reports where it reports one.  Weights are random: the time depends on the architecture, not
on training (the guard will usually keep a fixed spacing for a random network).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
from flax import nnx

import rbe_jax as R
from rbe_jax.zoo.nets import UNet

from accelerator import LARGE, SMALL


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--n", type=int, default=100, help="calibration samples (LD3: about 100)")
    ap.add_argument("--nfe", type=int, default=10)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--teacher-steps", type=int, default=250)
    a = ap.parse_args()
    name, (cfg, _) = next(iter((SMALL if a.small else LARGE).items()))
    net = UNet(cfg, nnx.Rngs(0))
    params = sum(x.size for x in jax.tree_util.tree_leaves(nnx.state(net, nnx.Param)))
    ns = R.NoiseSchedule.linear(1000)
    noise = jax.random.normal(jax.random.key(0), (a.n, cfg.image_size, cfg.image_size, cfg.in_channels))
    t0 = time.perf_counter()
    teacher = R.make_teacher(net, ns, noise, a.teacher_steps)
    t_teacher = time.perf_counter() - t0
    t0 = time.perf_counter()
    s = R.learn_schedule(net, ns, teacher, a.nfe, "unipc", steps=a.steps, batch_size=a.batch)
    t_learn = time.perf_counter() - t0
    stats = jax.devices()[0].memory_stats() or {}
    print(json.dumps(dict(
        model=name, params=int(params), device=jax.devices()[0].device_kind, samples=a.n, nfe=a.nfe,
        teacher_steps=a.teacher_steps, teacher_s=round(t_teacher, 1), learn_steps_taken=s.info["steps_taken"], batch=a.batch,
        learn_s=round(t_learn, 1), total_minutes=round((t_teacher + t_learn) / 60, 2), selected=s.info["selected"],
        peak_bytes=stats.get("peak_bytes_in_use"),
    )))


if __name__ == "__main__":
    main()
