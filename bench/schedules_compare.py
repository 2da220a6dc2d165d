"""Every solver on every schedule at equal NFE, on test noise that no schedule saw.

    python bench/schedules_compare.py --model gmm      # exact 32-d Gaussian mixture (minutes)
    python bench/schedules_compare.py --model digits   # the shipped digits model (about an hour on 2 CPU cores)
    python bench/schedules_compare.py --model digits --ship   # also writes the optimized
        schedules into rbe_jax/pretrained/digits/schedules/optimized_nfe{N}_{solver}.json

Schedules: the fixed spacings (uniform, quadratic, log-SNR, Karras rho = 7, on the model's
K = 100 grid), the RBE schedule (calibrated on the calibration noise), and
``optimize_schedule`` (made for each solver on the full training schedule, from the
calibration noise).  Reference: DPM-Solver++(2M) over all 1,000 training steps.  Scores on
the test noise: RMSE to the reference over all samples, and the median per-sample RMSE
(the typical sample; a few samples that flip between modes dominate the RMSE).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import jax
import numpy as np

import rbe_jax as R
from common import DEFAULT_CALIB, DEFAULT_TEST, rmse_and_median, setup

FIXED = ["uniform", "quadratic", "logsnr", "karras"]
SOLVERS = ["ddim", "dpmpp2m", "dpmpp3m", "unipc"]


def scores(model, noise, ref, sched, solver) -> tuple[float, float]:
    return rmse_and_median(R.rbe_sample(model, noise, sched, solver), ref)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("gmm", "digits"), default="gmm")
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 8, 10, 15, 20])
    ap.add_argument("--optimize-for", nargs="+", default=["dpmpp2m", "unipc"], help="solvers to optimize schedules for")
    ap.add_argument("--calib", type=int, default=None, help="calibration samples (gmm 1024, digits 64)")
    ap.add_argument("--test", type=int, default=None, help="test samples (gmm 2048, digits 256)")
    ap.add_argument("--ship", action="store_true", help="write the digits optimized schedules into the package")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    gmm = args.model == "gmm"
    n_calib = args.calib or DEFAULT_CALIB[args.model]
    n_test = args.test or DEFAULT_TEST[args.model]
    out = args.out or f"bench/results/schedules_{args.model}"
    model, full, grid, calib, test = setup(args.model, n_calib, n_test)

    t0 = time.perf_counter()
    ref_test = R.reference_solution(model, full, test, full.K)
    ref_calib = R.reference_solution(model, full, calib, full.K)
    check = R.reference_solution(model, full, test, full.K // 2)  # how accurate is the reference?
    ref_err = float(np.sqrt(np.mean((np.asarray(check) - np.asarray(ref_test)) ** 2)))
    print(f"references: {time.perf_counter() - t0:.0f}s; {full.K}- vs {full.K // 2}-step RMSE {ref_err:.2e}", flush=True)

    rows, costs = [], {}
    for nfe in args.nfe:
        scheds = {k: R.baseline_schedule(grid, nfe, k) for k in FIXED}
        t1 = time.perf_counter()
        scheds["rbe"] = R.calibrate(model, grid, calib, nfe)
        costs[f"rbe nfe={nfe}"] = dict(seconds=round(time.perf_counter() - t1, 1), sample_evals=scheds["rbe"].info["calibration_sample_evals"])
        for solver in args.optimize_for:
            s = R.optimize_schedule(model, full, calib, nfe, solver, reference=ref_calib, extra_candidates=[scheds["rbe"]], max_sweeps=1)
            scheds[f"optimized[{solver}]"] = s
            costs[f"optimized[{solver}] nfe={nfe}"] = dict(seconds=s.info["seconds"], sample_evals=s.info["model_evals"], start=s.info["start"])
            if args.ship and not gmm:
                from rbe_jax.checkpoint import pretrained_path

                s.save(pretrained_path("digits") / "schedules" / f"optimized_nfe{nfe}_{solver}.json")
        for solver in SOLVERS:
            for name, s in scheds.items():
                if name.startswith("optimized[") and name != f"optimized[{solver}]":
                    continue
                rmse, med = scores(model, test, ref_test, s, solver)
                rows.append(dict(nfe=nfe, solver=solver, schedule=name.split("[")[0], rmse=rmse, median=med))
        for r in rows:
            if r["nfe"] == nfe:
                print(f"nfe={nfe} {r['solver']:8s} {r['schedule']:10s} rmse {r['rmse']:.4f} median {r['median']:.4f}", flush=True)
    meta = dict(
        date=datetime.date.today().isoformat(),
        machine=f"{platform.machine()} {jax.devices()[0].device_kind}, jax {jax.__version__}",
        model=args.model, calib=n_calib, test=n_test, reference=f"dpmpp2m, {full.K} steps", reference_check_rmse=ref_err,
    )
    Path(out + ".json").write_text(json.dumps(dict(meta=meta, rows=rows, costs=costs), indent=1) + "\n")
    write_md(out + ".md", meta, rows, costs, args.nfe)
    print(Path(out + ".md").read_text())


def write_md(path, meta, rows, costs, nfes):
    L = [f"# Schedules x solvers at equal NFE: {meta['model']} ({meta['date']}, {meta['machine']})", "",
         f"`python bench/schedules_compare.py --model {meta['model']}`. Test noise: {meta['test']} samples; calibration "
         f"(RBE, optimized) on {meta['calib']} other samples. Reference: {meta['reference']} "
         f"(its distance to a half-as-long solve: {meta['reference_check_rmse']:.1e}).", ""]
    for key, title in (("rmse", "RMSE to the reference (all test samples)"), ("median", "Median per-sample RMSE")):
        L += [f"## {title}", "", "| solver | schedule | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---|---|" + "---|" * len(nfes)]
        for solver in SOLVERS:
            names = list(dict.fromkeys(r["schedule"] for r in rows if r["solver"] == solver))
            for name in names:
                vals = []
                for n in nfes:
                    col = [r for r in rows if r["nfe"] == n and r["solver"] == solver]
                    v = next((r[key] for r in col if r["schedule"] == name), None)
                    best_fixed = min(r[key] for r in col if r["schedule"] in FIXED)
                    vals.append("" if v is None else (f"**{v:.4f}**" if v <= min(r[key] for r in col) else f"{v:.4f}") + ("" if name in FIXED or v is None else f" ({v / best_fixed:.2f}x)"))
                L.append(f"| {solver} | {name} | " + " | ".join(vals) + " |")
        L.append("")
    L += ["(x): ratio to the best fixed spacing with the same solver. Bold: best schedule for that solver and NFE.", "", "## Calibration cost", "", "| schedule | seconds | per-sample model evaluations | start |", "|---|---|---|---|"]
    for k, v in costs.items():
        L.append(f"| {k} | {v['seconds']} | {v['sample_evals']} | {v.get('start', '')} |")
    Path(path).write_text("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
