"""Quality against NFE on the shipped digits model, judged by the evaluation classifier.

From one batch of noise (default 1,000 samples, seed 0), every configuration
{uniform, quadratic, logsnr, RBE} x {ddim, dpmpp2m} at NFE 5, 8, 10, 15, 20, and uniform
DDIM at 50, 100, 200, 1000 on the full T=1000 grid, is scored by:

- the share the classifier labels with confidence >= 0.9, and the class histogram;
- the Frechet distance (FD) in the classifier's 64-d feature space to the 1,797 real digits
  (the project's FID analogue), with a bootstrap standard deviation (resampling the
  generated set) as its noise; the noise floor is the FD between two halves of the real
  digits;
- the RMSE to the 1000-step DDIM samples from the same noise.

    python bench/quality/digits.py           # full run, about 30 min on 2 CPU cores
    python bench/quality/digits.py --quick   # 200 samples, NFE 8 and 10 only

Needs the train extra (scikit-learn).  Writes bench/results/digits.{md,json} and
bench/results/digits_nfe8.npz (the NFE-8 grids, drawn by bench/plots.py) and
docs/digits_samples.png (200-step DDIM).
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
from rbe_jax.zoo.checkpoint import load_model_info, pretrained_path
from rbe_jax.app.cli import save_grid_png
from rbe_jax.zoo.data import load_digits
from rbe_jax.zoo.metrics import frechet_distance, train_digit_classifier
from rbe_jax.core.solvers import get_solver

KINDS = ("uniform", "quadratic", "logsnr", "rbe")
SOLVERS = ("ddim", "dpmpp2m")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="bench/results/digits")
    args = ap.parse_args()
    n = 200 if args.quick else args.n
    nfes = (8, 10) if args.quick else (5, 8, 10, 15, 20)
    longs = (200, 1000) if args.quick else (50, 100, 200, 1000)

    images, labels = load_digits(16)
    t0 = time.perf_counter()
    clf = train_digit_classifier(images, labels, seed=0)
    print(f"classifier: hold-out accuracy {clf.holdout_accuracy:.4f} ({time.perf_counter() - t0:.0f}s)")
    real_f, real_p = clf.features_and_probs(images)
    perm = np.random.default_rng(0).permutation(len(images))
    half = len(images) // 2
    floor = frechet_distance(real_f[perm[:half]], real_f[perm[half:]])
    real = dict(confident_share=float(np.mean(real_p.max(1) >= 0.9)), fd_floor=floor)
    print(f"real digits: confident share {real['confident_share']:.3f}; FD between two halves {floor:.3f}")

    path = pretrained_path("digits")
    info = load_model_info(path)
    grid, full = info.default_grid, info.noise_schedule
    model = R.load_pretrained("digits")
    noise = jax.random.normal(jax.random.key(0), (n, *info.image_shape))
    sample = jax.jit(R.rbe_sample)
    boot = np.random.default_rng(1)

    def run(sched, solver):
        t0 = time.perf_counter()
        x = np.asarray(jax.block_until_ready(sample(model, noise, sched, get_solver(solver))))
        return x, time.perf_counter() - t0

    def score(x):
        f, p = clf.features_and_probs(x)
        conf = p.max(1)
        fds = [frechet_distance(f[boot.integers(0, len(f), len(f))], real_f) for _ in range(10)]
        return dict(
            fd=frechet_distance(f, real_f),
            fd_boot_std=float(np.std(fds)),
            confident_share=float(np.mean(conf >= 0.9)),
            mean_confidence=float(conf.mean()),
            histogram=np.bincount(p.argmax(1), minlength=10).tolist(),
        )

    rows, grids = [], {}
    for nfe in sorted(longs, reverse=True):  # the 1000-step run first: it is the RMSE reference
        x, dt = run(R.baseline_schedule(full, nfe, "uniform"), "ddim")
        if nfe == 1000:
            ref = x
        if nfe == 200:
            Path("docs").mkdir(exist_ok=True)
            save_grid_png(x[:100], "docs/digits_samples.png", scale=3)
        rows.append(dict(schedule="uniform (K=1000)", solver="ddim", nfe=nfe, seconds=dt, rmse=float(np.sqrt(np.mean((x - ref) ** 2))), **score(x)))
        print(rows[-1]["schedule"], nfe, f"FD {rows[-1]['fd']:.3f} conf {rows[-1]['confident_share']:.3f} ({dt:.0f}s)")
    for nfe in nfes:
        for kind in KINDS:
            sched = R.Schedule.load(path / "schedules" / f"rbe_nfe{nfe}.json", grid) if kind == "rbe" else R.baseline_schedule(grid, nfe, kind)
            for solver in SOLVERS:
                x, dt = run(sched, solver)
                rows.append(dict(schedule=kind, solver=solver, nfe=nfe, seconds=dt, rmse=float(np.sqrt(np.mean((x - ref) ** 2))), **score(x)))
                if nfe == 8:
                    grids[f"{kind}+{solver}"] = x[:36]
                print(kind, solver, nfe, f"FD {rows[-1]['fd']:.3f} conf {rows[-1]['confident_share']:.3f} rmse {rows[-1]['rmse']:.3f}")

    target = next(r for r in rows if r["schedule"].startswith("uniform (") and r["nfe"] == 200)
    speedup = {}
    for kind in KINDS:
        for solver in SOLVERS:
            ok = [r["nfe"] for r in rows if r["schedule"] == kind and r["solver"] == solver and r["fd"] <= target["fd"] + target["fd_boot_std"]]
            speedup[f"{kind}+{solver}"] = min(ok) if ok else None

    meta = dict(date=datetime.date.today().isoformat(), machine=f"{platform.machine()} {jax.devices()[0].device_kind}, jax {jax.__version__}", n=n, classifier_holdout_accuracy=clf.holdout_accuracy)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(dict(meta=meta, real=real, rows=rows, speedup=speedup), indent=1))
    if grids:
        np.savez_compressed(args.out + "_nfe8.npz", **grids)
    write_md(args.out + ".md", meta, real, rows, speedup, target, nfes)


def write_md(out, meta, real, rows, speedup, target, nfes):
    L = [
        f"# Shipped digits model: quality against NFE ({meta['date']}, {meta['machine']})",
        "",
        f"{meta['n']} samples from the same noise (seed 0). Evaluation CNN hold-out accuracy {meta['classifier_holdout_accuracy']:.4f}. "
        f"Real digits: {real['confident_share']:.3f} classified with confidence >= 0.9; FD between two halves of the real digits "
        f"(noise floor): {real['fd_floor']:.2f}. FD noise: bootstrap standard deviation over the generated set (the +- figures).",
        "",
        "## Long uniform DDIM runs (full T=1000 grid)",
        "",
        "| NFE | FD to real digits | confidence >= 0.9 | RMSE to 1000 steps | class histogram (0-9) | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["schedule"].startswith("uniform ("):
            L.append(f"| {r['nfe']} | {r['fd']:.2f} +- {r['fd_boot_std']:.2f} | {r['confident_share']:.3f} | {r['rmse']:.4f} | {r['histogram']} | {r['seconds']:.0f} |")
    for metric, title, fmt in (("fd", "FD to real digits (lower is better)", "{:.2f}"), ("confident_share", "Share classified with confidence >= 0.9 (higher is better)", "{:.3f}"), ("rmse", "RMSE to the 1000-step DDIM samples (lower is better)", "{:.4f}")):
        L += ["", f"## {title}", "", "| schedule + solver | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---" * (len(nfes) + 1) + "|"]
        for solver in SOLVERS:
            for kind in KINDS:
                cells = []
                for n in nfes:
                    r = next(r for r in rows if r["schedule"] == kind and r["solver"] == solver and r["nfe"] == n)
                    cells.append(fmt.format(r[metric]) + (f" +- {r['fd_boot_std']:.2f}" if metric == "fd" else ""))
                L.append(f"| {kind} + {solver} | " + " | ".join(cells) + " |")
    L += ["", f"## NFE needed to reach the FD of uniform DDIM at 200 steps ({target['fd']:.2f} +- {target['fd_boot_std']:.2f})", ""]
    for k, v in speedup.items():
        L.append(f"- {k}: " + (f"{v} NFE ({200 / v:.0f}x fewer)" if v else f"not reached by NFE {max(nfes)}"))
    Path(out).write_text("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
