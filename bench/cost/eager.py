"""Eager against jitted sampling, and the cost of rebuilding a model wrapper on every call.

    python bench/cost/eager.py            # the shipped digits U-Net and a small Linen MLP
    python bench/cost/eager.py --repeat 50

For each model it prints one JSON object with the median wall time (ms) of

- ``jit``: ``jax.jit(R.rbe_sample)(model, noise, schedule, solver)``, the model built once;
- ``eager``: ``R.rbe_sample(model, noise, schedule, solver)`` (no user-side jit);
- ``jit_rebuilt`` / ``eager_rebuilt``: the same with the wrapper rebuilt on every call
  (``R.as_model(mlp.apply, params)`` in the loop, as a user's sampling function does);

and the ratios ``eager / jit`` and ``rebuilt / jit`` measured in this one run (1.0 = no
overhead), with the number of times the model was traced over all the calls (1 = compiled
once per pattern).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

import rbe_jax as R


class MLP(nn.Module):
    width: int = 256

    @nn.compact
    def __call__(self, x, t):
        h = jnp.concatenate([x, (t[:, None] / 1000.0).astype(x.dtype)], axis=-1)
        for _ in range(3):
            h = nn.silu(nn.Dense(self.width)(h))
        return nn.Dense(x.shape[-1])(h)


def median_ms(fns: dict, repeat: int) -> dict:
    """Median wall time (ms) of each ``fn()``, timed in interleaved rounds (so that a slow
    spell of the machine hits every variant alike), after one warm-up call each."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[k].append(time.perf_counter() - t0)
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


def measure(name: str, build, noise, schedule, repeat: int) -> dict:
    """``build()`` returns a fresh model wrapper each call."""
    solver = R.unipc()
    sample = jax.jit(R.rbe_sample)
    model = build()
    res = median_ms(
        {
            "jit": lambda: sample(model, noise, schedule, solver),
            "eager": lambda: R.rbe_sample(model, noise, schedule, solver),
            "jit_rebuilt": lambda: sample(build(), noise, schedule, solver),
            "eager_rebuilt": lambda: R.rbe_sample(build(), noise, schedule, solver),
        },
        repeat,
    )
    ratios = {f"{k}/jit": round(res[k] / res["jit"], 3) for k in ("eager", "jit_rebuilt", "eager_rebuilt")}
    return {"model": name, "batch": int(noise.shape[0]), "nfe": schedule.nfe, **{k: round(v, 3) for k, v in res.items()}, **ratios}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--nfe", type=int, default=10)
    args = ap.parse_args(argv)

    traces = []
    mlp = MLP()

    def counted_apply(params, x, t):
        traces.append(1)
        return mlp.apply(params, x, t)

    ns = R.NoiseSchedule.linear(1000)
    noise = jax.random.normal(jax.random.key(0), (64, 32))
    params = mlp.init(jax.random.key(1), noise, jnp.zeros((64,)))
    # the README's Linen pattern: R.as_model(mlp.apply, params) -- here counted by a wrapper
    # module-level function, so that the trace count is visible
    sched = R.baseline_schedule(ns, args.nfe, "logsnr")
    print(json.dumps({**measure("linen MLP (README pattern)", lambda: R.as_model(mlp.apply, params), noise, sched, args.repeat)}))
    print(json.dumps({**measure("linen MLP (counted)", lambda: R.as_model(counted_apply, params), noise, sched, args.repeat), "traces": len(traces)}))

    digits = R.load_pretrained("digits")
    from rbe_jax.zoo.checkpoint import load_model_info, pretrained_path

    info = load_model_info(pretrained_path("digits"))
    noise = jax.random.normal(jax.random.key(0), (64, *info.image_shape))
    sched = R.pretrained_schedule("digits", args.nfe)
    print(json.dumps(measure("digits U-Net (shipped)", lambda: digits, noise, sched, args.repeat)))


if __name__ == "__main__":
    main()
