"""Checks the shipped schedules on VALIDATION noise: neither the calibration noise of the RBE
and optimized schedules nor the test noise of bench/schedules/compare.py.

    python bench/schedules/validate.py      # the CLI's default solver (UniPC), 256 samples:
        # bench/results/validation_digits.{md,json}
    python bench/schedules/validate.py --solver unipc dpmpp2m --n 2048 --key 2048
        # both solvers' shipped schedules on 2,048 samples of a key no choice ever saw:
        # bench/results/validation_digits_unipc-dpmpp2m_n2048_key2048.{md,json}
    python bench/schedules/validate.py --model digits_cond --guidance 2 --nfe 15 20
        # the guided schedules shipped for that weight (labels 0-9 in turn), written to
        # bench/results/validation_digits_cond_w2_nfe15-20.{md,json}

Candidates, for each solver: the fixed spacings on the model's K = 100 grid, the shipped RBE
schedule and the shipped schedule optimized for that solver.  Scored by RMSE to
DPM-Solver++(2M) over all 1,000 training steps from the same validation samples; the
same over the 99% of samples with the smallest errors, and the median per-sample RMSE (the
typical sample); each with the optimized schedule's ratio to the best fixed spacing by that
score, the RMSE ratio with a 90% bootstrap interval over the samples.
"""

from __future__ import annotations

import sys

import argparse
import json
from pathlib import Path

import jax
import numpy as np

import rbe_jax as R
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/common.py
from common import bootstrap_ratio, per_sample_rmse, scores
from rbe_jax.zoo.checkpoint import load_model_info, pretrained_path

FIXED = ("uniform", "quadratic", "logsnr", "karras")
# the scores of common.scores, with their table titles
TITLES = {"rmse": "RMSE to the reference", "rmse99": "RMSE over the 99% of samples with the smallest errors", "median": "Median per-sample RMSE"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("digits", "digits_cond"), default="digits")
    ap.add_argument("--guidance", type=float, default=2.0, help="digits_cond: the guidance weight whose shipped schedules are checked")
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 8, 10, 15, 20])
    ap.add_argument("--solver", nargs="+", default=["unipc"], choices=("unipc", "dpmpp2m"), help="solvers whose shipped optimized schedules are checked")
    ap.add_argument("--n", type=int, default=256, help="validation samples")
    ap.add_argument("--key", type=int, default=303, help="PRNG key of the validation noise")
    args = ap.parse_args()
    path = pretrained_path(args.model)
    info = load_model_info(path)
    net, grid, full = R.load_pretrained(args.model), info.default_grid, info.noise_schedule
    suffix, name = "", args.model
    model = net
    if args.model == "digits_cond":
        model = R.ClassifierFreeGuidance(model=net, label=np.arange(args.n) % 10, scale=args.guidance, null_label=info.config.num_classes)
        suffix, name = f"_w{args.guidance:g}", f"{args.model}_w{args.guidance:g}"
    flags = []  # the options that differ from the defaults, in the file name and the command
    for opt in ("solver", "nfe", "n", "key"):
        value = getattr(args, opt)
        if value != ap.get_default(opt):
            values = [str(v) for v in (value if isinstance(value, list) else [value])]
            flags.append(f"--{opt} " + " ".join(values))
            name += "_" + ("" if opt == "solver" else opt) + "-".join(values)
    val = jax.random.normal(jax.random.key(args.key), (args.n, *info.image_shape))
    ref = R.reference_solution(model, full, val, full.K)
    rows = {}
    for solver in args.solver:
        for nfe in args.nfe:
            cands = {k: R.baseline_schedule(grid, nfe, k) for k in FIXED}
            for file in (f"rbe_nfe{nfe}{suffix}.json", f"optimized_nfe{nfe}_{solver}{suffix}.json"):
                f = path / "schedules" / file
                if f.is_file():
                    s = R.Schedule.load(f)
                    cands[s.method] = s
            mse = {k: per_sample_rmse(R.rbe_sample(model, val, s, solver), ref) ** 2 for k, s in cands.items()}
            per = {k: scores(m) for k, m in mse.items()}
            row = {score: {k: round(v[score], 5) for k, v in per.items()} for score in TITLES}
            if "optimized" in mse:
                row["ratio"] = {}
                for score in TITLES:
                    best = min(FIXED, key=row[score].get)
                    row["ratio"][score] = dict(best_fixed=best, ratio=round(row[score]["optimized"] / row[score][best], 3))
                lo, hi = bootstrap_ratio(mse["optimized"], mse[row["ratio"]["rmse"]["best_fixed"]])
                row["ratio"]["rmse"]["interval_90"] = [round(lo, 3), round(hi, 3)]
            rows.setdefault(solver, {})[nfe] = row
            print(f"{solver} nfe={nfe}:", json.dumps(row), flush=True)
    out = Path(f"bench/results/validation_{name}")
    what = f"{args.n} samples, key {args.key}" + (f", labels 0-9 in turn, guidance w = {args.guidance:g}" if suffix else "")
    out.with_suffix(".json").write_text(json.dumps(dict(validation=what, scores=rows), indent=1) + "\n")
    cmd = " ".join(["python bench/schedules/validate.py"] + ([f"--model {args.model} --guidance {args.guidance:g}"] if suffix else [])
                   + flags)
    L = [f"# Validation ({what}): each solver on each shipped/fixed schedule, {args.model}", "", f"`{cmd}`", ""]
    for solver, by_nfe in rows.items():
        for score, title in TITLES.items():
            names = list(dict.fromkeys(k for r in by_nfe.values() for k in r[score]))
            L += [f"## {solver}: {title}", "", "| schedule | " + " | ".join(f"NFE {n}" for n in by_nfe) + " |", "|---|" + "---|" * len(by_nfe)]
            L += [f"| {k} | " + " | ".join(f"{r[score][k]:.4f}" if k in r[score] else "" for r in by_nfe.values()) + " |" for k in names]
            if any("ratio" in r for r in by_nfe.values()):
                cells = []
                for r in by_nfe.values():
                    q = r.get("ratio", {}).get(score)
                    cells.append("" if q is None else f"{q['ratio']:.2f}x {q['best_fixed']}"
                                 + (f" (90%: {q['interval_90'][0]:.2f}-{q['interval_90'][1]:.2f})" if "interval_90" in q else ""))
                L.append("| optimized / best fixed | " + " | ".join(cells) + " |")
            L.append("")
    L.append("optimized / best fixed: the optimized schedule's score over the lowest score of a fixed spacing (named) for that solver, "
             "NFE and score; 90%: bootstrap interval of the RMSE ratio over the validation samples.")
    out.with_suffix(".md").write_text("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
