"""Quality of the shipped digits model, judged by the evaluation classifier.

For N samples (default 1,000) from the same noise: the share the classifier labels with
confidence >= 0.9, the class histogram, and the Frechet distance in the classifier's 64-d
feature space to the 1,797 real digits (the project's FID analogue).  The noise floor of
that distance is measured between two random halves of the real digits.

    python bench/digits_quality.py                 # 200-step uniform DDIM reference + NFE 10 rows
    python bench/digits_quality.py --n 200 --quick

Needs the train extra (scikit-learn).  Writes bench/results/digits.{md,json} and
docs/digits_samples.png.
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
from rbe_jax.checkpoint import load_model_info, pretrained_path
from rbe_jax.cli import save_grid_png
from rbe_jax.data import load_digits
from rbe_jax.metrics import frechet_distance, train_digit_classifier


def evaluate(clf, x, real_feats):
    f, p = clf.features_and_probs(x)
    conf = p.max(1)
    return dict(
        confident_share=float(np.mean(conf >= 0.9)),
        mean_confidence=float(conf.mean()),
        histogram=np.bincount(p.argmax(1), minlength=10).tolist(),
        fd=frechet_distance(f, real_feats),
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="skip the NFE-10 comparison rows")
    ap.add_argument("--out", default="bench/results/digits")
    args = ap.parse_args()

    images, labels = load_digits(16)
    t0 = time.perf_counter()
    clf = train_digit_classifier(images, labels, seed=0)
    print(f"classifier: hold-out accuracy {clf.holdout_accuracy:.4f} ({time.perf_counter() - t0:.0f}s to train)")
    real_f, real_p = clf.features_and_probs(images)
    perm = np.random.default_rng(0).permutation(len(images))
    half = len(images) // 2
    floor = frechet_distance(real_f[perm[:half]], real_f[perm[half:]])
    real = dict(confident_share=float(np.mean(real_p.max(1) >= 0.9)), fd_floor=floor, histogram=np.bincount(labels, minlength=10).tolist())
    print(f"real digits: confident share {real['confident_share']:.3f}; FD between two random halves {floor:.3f}")

    path = pretrained_path("digits")
    info = load_model_info(path)
    model = R.load_pretrained("digits")
    noise = jax.random.normal(jax.random.key(0), (args.n, *info.image_shape))
    sample = jax.jit(R.rbe_sample)
    rows = []
    configs = [("uniform", "ddim", 200, info.noise_schedule)]
    if not args.quick:
        grid = info.default_grid
        configs += [(k, s, 10, grid) for k in ("uniform", "logsnr", "rbe") for s in ("ddim", "dpmpp2m")]
    for kind, solver, nfe, grid in configs:
        if kind == "rbe":
            sched = R.Schedule.load(path / "schedules" / f"rbe_nfe{nfe}.json", grid)
        else:
            sched = R.baseline_schedule(grid, nfe, kind)
        t0 = time.perf_counter()
        x = np.asarray(jax.block_until_ready(sample(model, noise, sched, R.solvers.get_solver(solver))))
        dt = time.perf_counter() - t0
        r = dict(schedule=kind, solver=solver, nfe=nfe, grid_K=grid.K, seconds=dt, **evaluate(clf, x, real_f))
        rows.append(r)
        print(f"{kind}+{solver} NFE {nfe}: confident {r['confident_share']:.3f}, FD {r['fd']:.3f}, hist {r['histogram']} ({dt:.0f}s)")
        if nfe == 200:
            Path("docs").mkdir(exist_ok=True)
            save_grid_png(x[:100], "docs/digits_samples.png", scale=3)

    meta = dict(date=datetime.date.today().isoformat(), machine=f"{platform.machine()} {jax.devices()[0].device_kind}, jax {jax.__version__}", n=args.n, classifier_holdout_accuracy=clf.holdout_accuracy)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(dict(meta=meta, real=real, rows=rows), indent=1))
    L = [
        f"# Shipped digits model: classifier-based quality ({meta['date']}, {meta['machine']})",
        "",
        f"{args.n} samples from the same noise (seed 0). Evaluation CNN hold-out accuracy {clf.holdout_accuracy:.4f}. "
        f"Real digits: {real['confident_share']:.3f} classified with confidence >= 0.9; feature-space FD between two random halves "
        f"of the real digits (noise floor): {floor:.3f}.",
        "",
        "| schedule | solver | NFE | grid K | confidence >= 0.9 | mean confidence | FD to real digits | class histogram (0-9) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        L.append(f"| {r['schedule']} | {r['solver']} | {r['nfe']} | {r['grid_K']} | {r['confident_share']:.3f} | {r['mean_confidence']:.3f} | {r['fd']:.2f} | {r['histogram']} |")
    Path(args.out + ".md").write_text("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
