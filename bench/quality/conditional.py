"""Guided sampling with the shipped class-conditional digits model.

For each label 0-9 and guidance weights w in {0, 1, 2, 4}: N samples (default 100) at
NFE 10 (uniform DDIM, and an RBE schedule calibrated for each w on a batch of mixed
labels), judged by the
evaluation classifier: the share classified as the requested label with confidence >= 0.9.

    python bench/quality/conditional.py      # writes bench/results/conditional.{md,json}
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

import jax
import numpy as np

import rbe_jax as R
from rbe_jax.zoo.checkpoint import load_model_info, pretrained_path
from rbe_jax.zoo.data import load_digits
from rbe_jax.zoo.metrics import train_digit_classifier


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--out", default="bench/results/conditional")
    args = ap.parse_args()
    images, labels = load_digits(16)
    clf = train_digit_classifier(images, labels, seed=0)
    path = pretrained_path("digits_cond")
    info = load_model_info(path)
    grid = info.default_grid
    model = R.load_model(path)  # the bare conditional network, guided below
    sample = jax.jit(R.rbe_sample)
    y = np.repeat(np.arange(10), args.n)  # args.n samples of each label in one batch
    noise = jax.random.normal(jax.random.key(0), (y.size, *info.image_shape))
    calib_y = np.arange(128) % 10
    calib = jax.random.normal(jax.random.key(1), (128, *info.image_shape))
    rows = []
    for w in (0.0, 1.0, 2.0, 4.0):
        guided = R.ClassifierFreeGuidance(model=model, label=y, scale=w, null_label=info.config.num_classes)
        for kind in ("uniform", "rbe"):
            if kind == "rbe":  # calibrated for this guidance weight, on a batch of mixed labels
                c = R.ClassifierFreeGuidance(model=model, label=calib_y, scale=w, null_label=info.config.num_classes)
                sched = R.calibrate(c, grid, calib, 10, search_samples=calib.shape[0])  # per-sample labels: no sub-batch
            else:
                sched = R.baseline_schedule(grid, 10, "uniform")
            x = np.asarray(sample(guided, noise, sched, R.ddim()))
            p = clf.features_and_probs(x)[1]
            ok = (p.argmax(1) == y) & (p.max(1) >= 0.9)
            hits = [float(ok[y == k].mean()) for k in range(10)]
            rows.append(dict(guidance=w, schedule=kind, per_label=hits, mean=float(np.mean(hits)), model_times=np.round(sched.model_times, 3).tolist()))
            print(rows[-1])
    meta = dict(date=datetime.date.today().isoformat(), machine=f"{platform.machine()} {jax.devices()[0].device_kind}, jax {jax.__version__}", n=args.n)
    Path(args.out + ".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    L = [f"# Class-conditional digits model, guided sampling at NFE 10 ({meta['date']}, {meta['machine']})", "",
         f"{args.n} samples per label, same noise; share classified as the requested label with confidence >= 0.9.", "",
         "| guidance w | schedule | mean over labels | per label 0-9 |", "|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['guidance']:g} | {r['schedule']} | {r['mean']:.3f} | {' '.join(f'{h:.2f}' for h in r['per_label'])} |")
    Path(args.out + ".md").write_text("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
