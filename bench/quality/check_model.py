"""How often ``R.check_model`` judges a prediction label right: every family, every true
prediction, every declared one, on exact Gaussian mixtures.

    python bench/quality/check_model.py            # 3 mixtures (8-d sharp, 16-d unit scale, 2-d), about 25 minutes on 2 cores
    python bench/quality/check_model.py --quick    # the 8-d mixture only

A verdict is right when the check passes a declared label that samples like the true one
(its samples within 10% RMS of the true reading's, as EDM's velocity and eps do) and raises
on any other.  Prints one line per wrong verdict and per ambiguity (a passed label with
another plausible reading that samples differently: warned about, not raised), then the
counts.
"""

from __future__ import annotations

import argparse
import warnings

import jax
import numpy as np

import rbe_jax as R

FAMILIES = {
    "ddpm": R.NoiseSchedule.linear(1000),
    "vp": R.NoiseSchedule.vp_continuous(),
    "ve": R.NoiseSchedule.ve(0.01, 50.0),
    "edm": R.NoiseSchedule.edm(),
    "flow": R.NoiseSchedule.flow(time_scale=1000.0),
    "ztsnr": R.NoiseSchedule.from_betas(np.r_[np.linspace(1e-4, 0.02, 999), 1.0]),
}
MIXTURES = [  # (seed, dim, std range, mean range)
    (3, 8, (0.02, 0.2), 0.7),
    (3, 16, (0.3, 1.0), 1.0),
    (3, 2, (0.05, 0.3), 1.0),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    counts = {"verdicts": 0, "wrong": 0, "ambiguous": 0}
    for seed, dim, stds, spread in MIXTURES[:1] if args.quick else MIXTURES:
        base = R.testing.GaussianMixture.random(seed, dim, 6, FAMILIES["vp"], std_range=stds, mean_range=spread)
        noise = jax.random.normal(jax.random.key(0), (16, dim))
        for fam, ns in FAMILIES.items():
            jax.clear_caches()  # each (family, prediction) pair compiles its own probe
            preds = [p for p in R.PREDICTIONS if p != "velocity" or ns.process.has_velocity]
            for true in preds:
                gm = base.as_family(ns, true)
                for declared in preds:
                    c = R.check_model(R.as_model(gm, prediction=declared, noise_schedule=ns), ns, noise, strict=False)
                    counts["verdicts"] += 1
                    alike = c.distance[true] <= 0.1
                    if c.passed != alike:
                        counts["wrong"] += 1
                        print(f"WRONG d={dim} {fam} true={true} declared={declared}: passed={c.passed}; {c.message()}", flush=True)
                    elif c.passed and c.ambiguous:
                        counts["ambiguous"] += 1
                        print(f"ambiguous d={dim} {fam} true={true} declared={declared}: also {c.ambiguous}", flush=True)
    print(counts)


if __name__ == "__main__":
    main()
