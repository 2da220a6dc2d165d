"""Makes the schedules shipped with the class-conditional digits model for a few guidance
weights: rbe_jax/zoo/pretrained/digits_cond/schedules/rbe_nfe{N}_w{W}.json (RBE) and
optimized_nfe{N}_{solver}_w{W}.json (``optimize_schedule`` on the full training schedule).

Each is label-agnostic: the calibration batch cycles through all ten labels (label of sample
``b`` is ``b % 10``), so one schedule serves every label at that weight.  `rbe-jax sample
--label L --guidance W` uses the optimized one for its solver if there is one, else the RBE
one, else calibrates and caches a label-specific RBE schedule.

    python scripts/ship_guided_schedules.py [--method rbe] [--n 128] [--weights 1 2 4] [--nfe 10]
    python scripts/ship_guided_schedules.py --method optimized --n 64 --weights 2 --nfe 5 8 10
    python scripts/ship_guided_schedules.py --method optimized --n 64 --weights 1 4 --nfe 10
    python scripts/ship_guided_schedules.py --method optimized --n 64 --weights 2 --nfe 15 20
"""

import argparse
import time

import jax
import jax.numpy as jnp

import rbe_jax as R
from rbe_jax.zoo.checkpoint import load_model_info, pretrained_path


def rbe_starts(grid, full):
    """(grid, rule) of the RBE schedules an optimized schedule may start from: the faithful
    rule on the K = 100 grid and on the full training grid, the local-error rule on K = 100."""
    return ((grid, "backward_error"), (full, "backward_error"), (grid, "local_error"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--weights", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    p.add_argument("--nfe", type=int, nargs="+", default=[10])
    p.add_argument("--method", choices=("rbe", "optimized"), default="rbe")
    p.add_argument("--solver", default="unipc", help="optimized: the solver the schedule is made for")
    p.add_argument("--max-sweeps", type=int, default=1, help="optimized: passes per move size (as bench/schedules/compare.py)")
    args = p.parse_args()
    path = pretrained_path("digits_cond")
    info = load_model_info(path)
    model = R.load_pretrained("digits_cond")
    grid = info.default_grid
    noise = jax.random.normal(jax.random.key(args.seed), (args.n, *info.image_shape))
    labels = jnp.arange(args.n, dtype=jnp.int32) % info.config.num_classes
    for w in args.weights:
        guided = R.ClassifierFreeGuidance(model=model, label=labels, scale=w, null_label=info.config.num_classes)
        for nfe in args.nfe:
            t0 = time.perf_counter()
            if args.method == "optimized":  # every training step is a candidate point
                on, name = info.noise_schedule, f"optimized_nfe{nfe}_{args.solver}_w{w:g}.json"
                # the RBE schedules among the starts, as in bench/schedules/compare.py
                rbe = [R.calibrate(guided, g, noise, nfe, rule=rule, search_samples=args.n) for g, rule in rbe_starts(grid, on)]
                s = R.optimize_schedule(guided, on, noise, nfe, args.solver, extra_candidates=rbe, max_sweeps=args.max_sweeps)
            else:
                # a (B,) label array ties the wrapper to batches of B: search on the whole batch
                on, name = grid, f"rbe_nfe{nfe}_w{w:g}.json"
                s = R.calibrate(guided, on, noise, nfe, search_samples=args.n)
            s = R.Schedule.from_indices(on, s.indices, method=s.method, tau=s.tau, info=dict(s.info, guidance=w, labels="b % 10", seconds=round(time.perf_counter() - t0, 1)))
            out = s.save(path / "schedules" / name)
            print(f"{out}: indices {s.indices.tolist()} ({time.perf_counter() - t0:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
