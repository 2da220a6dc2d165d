"""Checks the CLI's default (UniPC on the shipped schedule optimized for it) against the
other shipped schedules on VALIDATION noise: neither the calibration noise of the RBE and
optimized schedules nor the test noise of bench/schedules_compare.py.

    python bench/validate_default.py      # writes bench/results/validation_digits.{md,json}

Candidates: the fixed spacings on the model's K = 100 grid, the shipped RBE schedule and the
shipped schedule optimized for UniPC.  Scored by RMSE to DPM-Solver++(2M) over all 1,000
training steps from the same 256 validation samples.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax

import rbe_jax as R
from rbe_jax.checkpoint import load_model_info, pretrained_path

SOLVER = "unipc"


def main():
    path = pretrained_path("digits")
    info = load_model_info(path)
    model, grid, full = R.load_pretrained("digits"), info.default_grid, info.noise_schedule
    val = jax.random.normal(jax.random.key(303), (256, *info.image_shape))
    ref = R.reference_solution(model, full, val, full.K)
    rows = {}
    for nfe in (5, 8, 10, 15, 20):
        cands = {k: R.baseline_schedule(grid, nfe, k) for k in ("uniform", "quadratic", "logsnr", "karras")}
        for name in (f"rbe_nfe{nfe}.json", f"optimized_nfe{nfe}_{SOLVER}.json"):
            f = path / "schedules" / name
            if f.is_file():
                s = R.Schedule.load(f)
                cands[s.method] = s
        scores = {k: R.schedule_error(model, val, ref, s, SOLVER) for k, s in cands.items()}
        rows[nfe] = {k: round(v, 5) for k, v in scores.items()}
        print(f"nfe={nfe}: best {min(scores, key=scores.get)}", json.dumps(rows[nfe]), flush=True)
    Path("bench/results/validation_digits.json").write_text(json.dumps(dict(solver=SOLVER, validation="256 samples, key 303", rmse=rows), indent=1) + "\n")
    names = list(rows[5])
    L = [f"# Validation (256 fresh samples): RMSE of {SOLVER} on each shipped/fixed schedule, digits", "",
         "`python bench/validate_default.py`", "", "| schedule | " + " | ".join(f"NFE {n}" for n in rows) + " |", "|---|" + "---|" * len(rows)]
    for k in names:
        L.append(f"| {k} | " + " | ".join(f"{rows[n][k]:.4f}" for n in rows) + " |")
    Path("bench/results/validation_digits.md").write_text("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
