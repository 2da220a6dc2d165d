"""Every solver on every schedule at equal NFE, on test noise that no schedule saw.

    python bench/schedules/compare.py --model gmm      # exact 32-d Gaussian mixture (minutes)
    python bench/schedules/compare.py --model digits   # the shipped digits model (about an hour on 2 CPU cores)
    python bench/schedules/compare.py --model digits --ship   # also writes the optimized
        schedules into rbe_jax/zoo/pretrained/digits/schedules/optimized_nfe{N}_{solver}.json
    python bench/schedules/compare.py --model digits_cond --guidance 2 --optimize-for unipc
        # the class-conditional model with classifier-free guidance, labels 0-9 in turn

Schedules: the fixed spacings (uniform, quadratic, log-SNR, Karras rho = 7, on the model's
K = 100 grid), the faithful RBE schedule (K = 100 grid), RBE on the full training grid
("rbe_fine", K = T), RBE driven by a second-order solver's local error ("rbe_local",
``calibrate(rule="local_error")``, K = 100 grid), and ``optimize_schedule`` (made for each
solver on the full training schedule from the calibration noise, objective ``--trim``, the
RBE schedules among its starts; ``--optimize-for`` with no solver skips it).  Reference: DPM-Solver++(2M) over
all 1,000 training steps.  Scores on the test noise:

- RMSE to the reference over all samples.  On both models about 1% of the samples sit near a
  boundary between modes and end in another mode under any few-step solver; they carry most
  of the squared error (printed), so this score moves with a handful of samples.  The ratio
  of the optimized schedule to the best fixed spacing comes with a 90% bootstrap interval
  over test samples;
- RMSE over the 99% of samples with the smallest errors, and the median per-sample RMSE
  (the typical sample);
- digits: the Frechet distance (FD) in an evaluation classifier's feature space to the real
  digits (``rbe_jax.metrics``); the reference samples' own FD is the floor.
"""

from __future__ import annotations

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
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/common.py
from common import DEFAULT_CALIB, DEFAULT_TEST, MODELS, best99, bootstrap_ratio, per_sample_rmse, scores, setup

FIXED = ["uniform", "quadratic", "logsnr", "karras"]
RBE_KINDS = (("rbe", False, "backward_error"), ("rbe_fine", True, "backward_error"), ("rbe_local", False, "local_error"))
# optimize_schedule's trim: a share of the calibration batch below the ~1% of samples that
# change modes, once the batch is large enough to hold many of them (the mixture's 16,384);
# on the image models' small batches 2% (2 or 3 samples)
DEFAULT_TRIM = {"gmm": 0.005, "digits": 0.02, "digits_cond": 0.02}
SOLVERS = ["ddim", "dpmpp2m", "dpmpp3m", "unipc"]


def digits_fd():
    """``features(x) -> FD to the real digits`` with a freshly trained evaluation classifier."""
    from rbe_jax.zoo.data import load_digits
    from rbe_jax.zoo.metrics import frechet_distance, train_digit_classifier

    images, labels = load_digits(16)
    clf = train_digit_classifier(images, labels, seed=0)
    real = clf.features_and_probs(images)[0]
    return lambda x: frechet_distance(clf.features_and_probs(np.asarray(x))[0], real)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=MODELS, default="gmm")
    ap.add_argument("--guidance", type=float, default=2.0, help="digits_cond: classifier-free guidance weight (default 2)")
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 8, 10, 15, 20])
    ap.add_argument("--optimize-for", nargs="*", default=["dpmpp2m", "unipc"], help="solvers to optimize schedules for (none: skip)")
    ap.add_argument("--calib", type=int, default=None, help="calibration samples (gmm 16384, digits and digits_cond 64)")
    ap.add_argument("--test", type=int, default=None, help="test samples (gmm 16384, digits and digits_cond 256)")
    ap.add_argument("--trim", type=float, default=None, help="optimize_schedule's trim, the share of worst calibration samples left out (gmm 0.005, else 0.02)")
    ap.add_argument("--ship", action="store_true", help="write the digits optimized schedules into the package")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.ship and args.model != "digits":
        ap.error("--ship writes the digits model's schedules (the guided ones: scripts/ship_guided_schedules.py)")
    n_calib = args.calib or DEFAULT_CALIB[args.model]
    n_test = args.test or DEFAULT_TEST[args.model]
    args.trim = DEFAULT_TRIM[args.model] if args.trim is None else args.trim
    out = args.out or f"bench/results/schedules_{args.model}" + (f"_w{args.guidance:g}" if args.model == "digits_cond" else "")
    model, full, grid, calib, test, calib_model = setup(args.model, n_calib, n_test, args.guidance)

    t0 = time.perf_counter()
    ref_test = R.reference_solution(model, full, test, full.K)
    ref_calib = R.reference_solution(calib_model, full, calib, full.K)
    check = R.reference_solution(model, full, test, full.K // 2)  # how accurate is the reference?
    ref_err = float(np.sqrt(np.mean((np.asarray(check) - np.asarray(ref_test)) ** 2)))
    print(f"references: {time.perf_counter() - t0:.0f}s; {full.K}- vs {full.K // 2}-step RMSE {ref_err:.2e}", flush=True)

    fd = digits_fd() if args.model != "gmm" else None
    # a guided model carries one label per sample: RBE's tau search must use the whole batch
    per_sample_labels = dict(search_samples=calib.shape[0]) if args.model == "digits_cond" else {}
    fd_floor = fd(ref_test) if fd else None
    rows, costs = [], {}
    for nfe in args.nfe:
        scheds = {k: R.baseline_schedule(grid, nfe, k) for k in FIXED}
        for name, fine, rule in RBE_KINDS:
            t1 = time.perf_counter()
            scheds[name] = R.calibrate(calib_model, full if fine else grid, calib, nfe, rule=rule, **per_sample_labels)
            costs[f"{name} nfe={nfe}"] = dict(seconds=round(time.perf_counter() - t1, 1), sample_evals=scheds[name].info["calibration_sample_evals"])
        for solver in args.optimize_for:
            s = R.optimize_schedule(calib_model, full, calib, nfe, solver, reference=ref_calib, extra_candidates=[scheds[name] for name, _, _ in RBE_KINDS], max_sweeps=1, trim=args.trim)
            scheds[f"optimized[{solver}]"] = s
            costs[f"optimized[{solver}] nfe={nfe}"] = dict(seconds=s.info["seconds"], sample_evals=s.info["model_evals"], start=s.info["start"])
            if args.ship:
                from rbe_jax.zoo.checkpoint import pretrained_path

                s.save(pretrained_path("digits") / "schedules" / f"optimized_nfe{nfe}_{solver}.json")
        for solver in SOLVERS:
            mse = {}
            for name, s in scheds.items():
                if name.startswith("optimized[") and name != f"optimized[{solver}]":
                    continue
                name = name.split("[")[0]
                x = R.rbe_sample(model, test, s, solver)
                mse[name] = per_sample_rmse(x, ref_test) ** 2
                rows.append(dict(nfe=nfe, solver=solver, schedule=name, **scores(mse[name]),
                                 top1_share=float(1.0 - best99(mse[name]).sum() / mse[name].sum()), fd=fd(x) if fd else None))
            if "optimized" in mse:
                best = min(FIXED, key=lambda k: mse[k].mean())
                next(r for r in rows if r["nfe"] == nfe and r["solver"] == solver and r["schedule"] == "optimized")["rmse_ratio_90"] = bootstrap_ratio(mse["optimized"], mse[best])
        for r in rows:
            if r["nfe"] == nfe:
                print(f"nfe={nfe} {r['solver']:8s} {r['schedule']:10s} rmse {r['rmse']:.4f} rmse99 {r['rmse99']:.4f} median {r['median']:.4f}" + (f" fd {r['fd']:.2f}" if fd else ""), flush=True)
    meta = dict(
        date=datetime.date.today().isoformat(),
        machine=f"{platform.machine()} {jax.devices()[0].device_kind}, jax {jax.__version__}",
        model=args.model + (f", guidance w = {args.guidance:g}" if args.model == "digits_cond" else ""), calib=n_calib, test=n_test, reference=f"dpmpp2m, {full.K} steps", reference_check_rmse=ref_err,
        trim=args.trim, reference_fd=fd_floor, command=" ".join(["python bench/schedules/compare.py", *sys.argv[1:]]),
    )
    Path(out + ".json").write_text(json.dumps(dict(meta=meta, rows=rows, costs=costs), indent=1) + "\n")
    write_md(out + ".md", meta, rows, costs, args.nfe)
    print(Path(out + ".md").read_text())


def write_md(path, meta, rows, costs, nfes):
    L = [f"# Schedules x solvers at equal NFE: {meta['model']} ({meta['date']}, {meta['machine']})", "",
         f"`{meta.get('command', 'python bench/schedules/compare.py --model ' + meta['model'])}`. Test noise: {meta['test']} samples; calibration "
         f"(RBE, optimized with trim {meta['trim']}) on {meta['calib']} other samples. Reference: {meta['reference']} "
         f"(its distance to a half-as-long solve: {meta['reference_check_rmse']:.1e}).", ""]
    metrics = [("rmse", "RMSE to the reference (all test samples)", "{:.4f}"),
               ("rmse99", "RMSE over the 99% of test samples with the smallest errors", "{:.4f}"),
               ("median", "Median per-sample RMSE", "{:.4f}")]
    if meta.get("reference_fd") is not None:
        metrics.append(("fd", f"Frechet distance to the real digits (the reference samples: {meta['reference_fd']:.2f})", "{:.2f}"))
    for key, title, fmt in metrics:
        L += [f"## {title}", "", "| solver | schedule | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---|---|" + "---|" * len(nfes)]
        for solver in SOLVERS:
            names = list(dict.fromkeys(r["schedule"] for r in rows if r["solver"] == solver))
            for name in names:
                vals = []
                for n in nfes:
                    col = [r for r in rows if r["nfe"] == n and r["solver"] == solver]
                    row = next((r for r in col if r["schedule"] == name), None)
                    if row is None:
                        vals.append("")
                        continue
                    v, best_fixed = row[key], min(r[key] for r in col if r["schedule"] in FIXED)
                    cell = f"**{fmt.format(v)}**" if v <= min(r[key] for r in col) else fmt.format(v)
                    if name not in FIXED:
                        cell += f" ({v / best_fixed:.2f}x" + (", 90%: {:.2f}-{:.2f})".format(*row["rmse_ratio_90"]) if key == "rmse" and "rmse_ratio_90" in row else ")")
                    vals.append(cell)
                L.append(f"| {solver} | {name} | " + " | ".join(vals) + " |")
        L.append("")
    L += ["(x): ratio to the best fixed spacing with the same solver (90%: bootstrap interval of that ratio over the test samples). "
          "Bold: best schedule for that solver and NFE.", "",
          "Share of the squared error carried by the worst 1% of test samples (best fixed spacing, UniPC): "
          + ", ".join(f"NFE {n}: {min((r for r in rows if r['nfe'] == n and r['solver'] == 'unipc' and r['schedule'] in FIXED), key=lambda r: r['rmse'])['top1_share']:.0%}" for n in nfes) + ".", "",
          "## Calibration cost", "", "| schedule | seconds | per-sample model evaluations | start |", "|---|---|---|---|"]
    for k, v in costs.items():
        L.append(f"| {k} | {v['seconds']} | {v['sample_evals']} | {v.get('start', '')} |")
    Path(path).write_text("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
