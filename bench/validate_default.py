"""Checks the CLI's default (UniPC on the shipped schedule optimized for it) against the
other shipped schedules on VALIDATION noise: neither the calibration noise of the RBE and
optimized schedules nor the test noise of bench/schedules_compare.py.

    python bench/validate_default.py      # writes bench/results/validation_digits.{md,json}
    python bench/validate_default.py --model digits_cond --guidance 2 --nfe 15 20
        # the guided schedules shipped for that weight (labels 0-9 in turn), written to
        # bench/results/validation_digits_cond_w2_nfe15-20.{md,json}

Candidates: the fixed spacings on the model's K = 100 grid, the shipped RBE schedule and the
shipped schedule optimized for UniPC.  Scored by RMSE to DPM-Solver++(2M) over all 1,000
training steps from the same validation samples.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np

import rbe_jax as R
from rbe_jax.checkpoint import load_model_info, pretrained_path

SOLVER = "unipc"
VALIDATION_KEY = 303


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("digits", "digits_cond"), default="digits")
    ap.add_argument("--guidance", type=float, default=2.0, help="digits_cond: the guidance weight whose shipped schedules are checked")
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 8, 10, 15, 20])
    ap.add_argument("--n", type=int, default=256, help="validation samples")
    args = ap.parse_args()
    path = pretrained_path(args.model)
    info = load_model_info(path)
    net, grid, full = R.load_pretrained(args.model), info.default_grid, info.noise_schedule
    suffix, name = "", args.model
    model = net
    if args.model == "digits_cond":
        model = R.ClassifierFreeGuidance(model=net, label=np.arange(args.n) % 10, scale=args.guidance, null_label=info.config.num_classes)
        suffix, name = f"_w{args.guidance:g}", f"{args.model}_w{args.guidance:g}"
    if args.nfe != ap.get_default("nfe"):
        name += "_nfe" + "-".join(map(str, args.nfe))
    val = jax.random.normal(jax.random.key(VALIDATION_KEY), (args.n, *info.image_shape))
    ref = R.reference_solution(model, full, val, full.K)
    rows = {}
    for nfe in args.nfe:
        cands = {k: R.baseline_schedule(grid, nfe, k) for k in ("uniform", "quadratic", "logsnr", "karras")}
        for file in (f"rbe_nfe{nfe}{suffix}.json", f"optimized_nfe{nfe}_{SOLVER}{suffix}.json"):
            f = path / "schedules" / file
            if f.is_file():
                s = R.Schedule.load(f)
                cands[s.method] = s
        scores = {k: R.schedule_error(model, val, ref, s, SOLVER) for k, s in cands.items()}
        rows[nfe] = {k: round(v, 5) for k, v in scores.items()}
        print(f"nfe={nfe}: best {min(scores, key=scores.get)}", json.dumps(rows[nfe]), flush=True)
    out = Path(f"bench/results/validation_{name}")
    what = f"{args.n} samples, key {VALIDATION_KEY}" + (f", labels 0-9 in turn, guidance w = {args.guidance:g}" if suffix else "")
    out.with_suffix(".json").write_text(json.dumps(dict(solver=SOLVER, validation=what, rmse=rows), indent=1) + "\n")
    names = list(dict.fromkeys(k for r in rows.values() for k in r))
    cmd = " ".join(["python bench/validate_default.py"] + ([f"--model {args.model} --guidance {args.guidance:g}"] if suffix else [])
                   + ([f"--nfe {' '.join(map(str, args.nfe))}"] if args.nfe != ap.get_default("nfe") else []))
    L = [f"# Validation ({what}): RMSE of {SOLVER} on each shipped/fixed schedule, {args.model}", "",
         f"`{cmd}`", "", "| schedule | " + " | ".join(f"NFE {n}" for n in rows) + " |", "|---|" + "---|" * len(rows)]
    for k in names:
        L.append(f"| {k} | " + " | ".join(f"{rows[n][k]:.4f}" if k in rows[n] else "" for n in rows) + " |")
    out.with_suffix(".md").write_text("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
