"""Makes the schedules shipped with the rectified-flow digits model and checks them on
held-out noise: rbe_jax/zoo/pretrained/digits_flow/schedules/rbe_nfe{N}.json (faithful RBE on the
K = 100 grid; every path leaves pure noise by one exact step) and optimized_nfe{N}_unipc.json
(``optimize_schedule`` for UniPC on the 1,000-point grid, the RBE schedules among its
starts), then scores them beside the fixed spacings on noise no calibration saw.

    python scripts/ship_flow_schedules.py                 # about 40 minutes on 2 CPU cores
    python scripts/ship_flow_schedules.py --nfe 10 --n 64 --test 64 --dry-run

Writes the schedules and bench/results/validation_digits_flow.{md,json}: RMSE to an accurate
solve (DPM-Solver++(2M), 500 steps of the grid), the median per-sample RMSE, and the share of
samples an evaluation classifier recognises with confidence >= 0.9 (the shipped digits
model's criterion).
"""

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

import rbe_jax as R
from rbe_jax.zoo.checkpoint import model_info, pretrained_path

FIXED = ("uniform", "quadratic", "shift")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 8, 10, 15, 20])
    p.add_argument("--n", type=int, default=256, help="calibration samples")
    p.add_argument("--seed", type=int, default=1234, help="calibration noise seed")
    p.add_argument("--test", type=int, default=256, help="held-out samples")
    p.add_argument("--test-seed", type=int, default=2024)
    p.add_argument("--dry-run", action="store_true", help="score, but write no schedule into the package")
    args = p.parse_args()
    info = model_info("digits_flow")
    ns, grid = info.noise_schedule, info.default_grid
    model = R.load_denoiser("digits_flow")
    calib = jax.random.normal(jax.random.key(args.seed), (args.n, *info.image_shape))
    test = jax.random.normal(jax.random.key(args.test_seed), (args.test, *info.image_shape))
    R.check_model(model, ns, calib)
    dest = pretrained_path("digits_flow") / "schedules"
    dest.mkdir(exist_ok=True)
    ref_test = np.asarray(R.reference_solution(model, ns, test))
    finer = np.asarray(R.reference_solution(model, ns, test[:64], 1000))
    ref_check = float(np.sqrt(np.mean((finer - ref_test[:64]) ** 2)))
    print(f"reference: 500 vs 1000 steps, RMSE {ref_check:.1e}", flush=True)
    clf = _classifier()
    rows = []
    for nfe in args.nfe:
        t0 = time.perf_counter()
        rbe = R.calibrate(model, grid, calib, nfe)
        rbe_local = R.calibrate(model, grid, calib, nfe, rule="local_error")
        opt = R.optimize_schedule(model, ns, calib, nfe, "unipc", extra_candidates=[rbe, rbe_local], max_sweeps=1)
        print(f"nfe={nfe}: rbe tau {rbe.tau:.3g}, optimized from {opt.info['start']} ({time.perf_counter() - t0:.0f}s)", flush=True)
        if not args.dry_run:
            rbe.save(dest / f"rbe_nfe{nfe}.json")
            opt.save(dest / f"optimized_nfe{nfe}_unipc.json")
        scheds = {k: R.baseline_schedule(ns, nfe, k) for k in FIXED}
        scheds.update(rbe=rbe, optimized=opt)
        for name, s in scheds.items():
            for solver in ("ddim", "unipc"):
                x = np.asarray(R.rbe_sample(model, test, s, solver))
                err = np.sqrt(np.mean((x - ref_test).reshape(len(x), -1) ** 2, axis=1))
                conf = clf.features_and_probs(x)[1].max(1)
                rows.append(dict(nfe=nfe, schedule=name, solver=solver, rmse=float(np.sqrt(np.mean(err**2))), median=float(np.median(err)), recognised=float(np.mean(conf >= 0.9))))
                r = rows[-1]
                print(f"  {name:10s} {solver:6s} rmse {r['rmse']:.4f} median {r['median']:.4f} recognised {r['recognised']:.2f}", flush=True)
    meta = dict(date=datetime.date.today().isoformat(), machine=f"{platform.machine()} {jax.devices()[0].device_kind}, jax {jax.__version__}",
                calib=args.n, test=args.test, reference=f"dpmpp2m, 500 steps of the 1,000-point grid (RMSE {ref_check:.1e} to 1,000 steps)",
                command=" ".join(["python scripts/ship_flow_schedules.py", *sys.argv[1:]]))
    out = Path("bench/results/validation_digits_flow")
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1) + "\n")
    out.with_suffix(".md").write_text(_markdown(meta, rows, args.nfe))
    print(out.with_suffix(".md").read_text())


def _classifier():
    from rbe_jax.zoo.data import load_digits
    from rbe_jax.zoo.metrics import train_digit_classifier

    x, y = load_digits(16)
    return train_digit_classifier(x, y, seed=0)


def _markdown(meta, rows, nfes) -> str:
    L = [f"# digits_flow: shipped schedules on held-out noise ({meta['date']}, {meta['machine']})", "",
         f"`{meta['command']}`. Calibration: {meta['calib']} samples; scores on {meta['test']} other samples. Reference: "
         f"{meta['reference']}. Cells: RMSE / median per-sample RMSE / share recognised by the evaluation classifier "
         "(confidence >= 0.9; the reference samples' share is the ceiling).", "",
         "| schedule | solver | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---|---|" + "---|" * len(nfes)]
    for name in dict.fromkeys(r["schedule"] for r in rows):
        for solver in ("ddim", "unipc"):
            cells = []
            for n in nfes:
                r = next(r for r in rows if r["nfe"] == n and r["schedule"] == name and r["solver"] == solver)
                best = min(x["rmse"] for x in rows if x["nfe"] == n)
                cell = f"{r['rmse']:.4f} / {r['median']:.4f} / {r['recognised']:.2f}"
                cells.append(f"**{cell}**" if r["rmse"] <= best else cell)
            L.append(f"| {name} | {solver} | " + " | ".join(cells) + " |")
    L += ["", "DDIM on a flow model is its Euler sampler; `shift` is SD3's shifted spacing (shift 3). Bold: lowest RMSE in the column."]
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    main()
