"""Learned schedules (``R.learn_schedule``) against the fixed spacings and ``optimize_schedule``,
on held-out noise that no calibration saw.

For each solver and NFE: every standard spacing that applies to the model's process, the
safe ``optimize_schedule`` (validation split and guard) and ``learn_schedule`` (its start
candidates include the optimized schedule) are scored on test noise against an accurate
solve of the same noise: RMSE, median per-sample RMS error and, for the digits models, the
Frechet distance (FD) in an evaluation classifier's feature space to the real digits.

    python bench/schedules/learned.py --model gmm                       # exact 24-d mixture (the issue's), minutes
    python bench/schedules/learned.py --model digits --nfe 5 10          # the shipped digits U-Net
    python bench/schedules/learned.py --model digits_flow --nfe 5 10
    python bench/schedules/learned.py --model families                   # an exact mixture in every family
    python bench/schedules/learned.py --model mypkg.models:make_model    # your own model

A user's ``module:function`` takes no argument and returns ``(model, noise_schedule,
sample_shape)``: the model as ``rbe_sample`` takes it (``R.as_model(...)`` for any family).

Writes bench/results/learned_<model>.{md,json}.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import platform
import time
from pathlib import Path

import jax
import numpy as np

import rbe_jax as R
from rbe_jax.core.schedule import valid_baselines

FAMILIES = {
    "ddpm": (R.NoiseSchedule.linear(1000), "eps"),
    "vp": (R.NoiseSchedule.vp_continuous(), "score"),
    "ve": (R.NoiseSchedule.ve(0.01, 50.0), "score"),
    "edm": (R.NoiseSchedule.edm(), "x0"),
    "flow": (R.NoiseSchedule.flow(time_scale=1000.0), "velocity"),
}
MIXTURE_LEARN = dict(steps=300, batch_size=128, learning_rate=0.05, warmup=20, patience=8)  # cheap model: a longer run


def models(name: str):
    """``[(label, model, noise_schedule, shape, learn options, digits?)]``."""
    if name == "gmm":
        ns = R.NoiseSchedule.linear(1000)
        return [("gmm", R.testing.GaussianMixture.random(0, 24, 7, ns), ns, (24,), MIXTURE_LEARN, False)]
    if name == "families":
        base = R.testing.GaussianMixture.random(0, 24, 7, R.NoiseSchedule.linear(1000))
        return [(f, base.as_family(ns, pred).denoiser, ns, (24,), MIXTURE_LEARN, False) for f, (ns, pred) in FAMILIES.items()]
    if name in ("digits", "digits_flow"):
        info = R.model_info(name)
        return [(name, R.load_denoiser(name), info.noise_schedule, info.image_shape, {}, True)]
    if ":" in name:
        mod, fn = name.split(":", 1)
        model, ns, shape = getattr(importlib.import_module(mod), fn)()
        return [(name, model, ns, tuple(shape), {}, False)]
    raise SystemExit(f"unknown --model {name!r}: gmm, families, digits, digits_flow or module:function")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gmm")
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--solvers", nargs="+", default=["unipc", "dpmpp2m"])
    ap.add_argument("--calib", type=int, default=None, help="calibration samples (default 1024 on mixtures, 256 otherwise; a quarter held out)")
    ap.add_argument("--test", type=int, default=None, help="test samples (default 2048 on mixtures, 256 otherwise)")
    ap.add_argument("--teacher-steps", type=int, default=None, help="steps of the accurate solves (default min(K, 500) on mixtures, 250 otherwise)")
    ap.add_argument("--steps", type=int, default=None, help="learning steps (default: learn_schedule's, 300 on mixtures)")
    ap.add_argument("--no-optimize", action="store_true", help="skip optimize_schedule")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    out = Path(a.out or f"bench/results/learned_{a.model.replace(':', '_').replace('.', '_')}")
    clf = real_f = None
    rows = []
    for label, model, ns, shape, opts, digits in models(a.model):
        mixture = not digits and a.model in ("gmm", "families")
        n_calib, n_test = a.calib or (1024 if mixture else 256), a.test or (2048 if mixture else 256)
        tsteps = a.teacher_steps or (None if mixture else 250)
        opts = dict(opts, **({} if a.steps is None else {"steps": a.steps}))
        if digits and clf is None:
            from rbe_jax.zoo.data import load_digits
            from rbe_jax.zoo.metrics import train_digit_classifier

            images, labels = load_digits(16)
            clf = train_digit_classifier(images, labels, seed=0)
            real_f, _ = clf.features_and_probs(images)
        t0 = time.perf_counter()
        calib = R.make_teacher(model, ns, jax.random.normal(jax.random.key(101), (n_calib, *shape)), tsteps)
        test = R.make_teacher(model, ns, jax.random.normal(jax.random.key(202), (n_test, *shape)), tsteps)
        print(f"{label}: teachers of {n_calib} + {n_test} samples, {calib.steps} steps ({time.perf_counter() - t0:.0f}s)", flush=True)

        errors = {}  # per-sample test errors of the last scored schedules, for the intervals

        def score(s, solver, key=None):  # solver: a name or a Solver
            full = R.schedule_stats(model, s, solver, test)
            errors[key] = full.errors
            st = full.as_dict()
            if digits:
                from rbe_jax.zoo.metrics import frechet_distance

                f, _ = clf.features_and_probs(np.asarray(R.rbe_sample(model, test.noise, s, solver)))
                st["fd"] = frechet_distance(f, real_f)
            return st

        for solver in a.solvers:
            for nfe in a.nfe:
                fixed = {k: score(R.baseline_schedule(ns, nfe, k), solver, k) for k in valid_baselines(ns)}
                best = min(fixed, key=lambda k: fixed[k]["rmse"])
                ref_errors = errors[best]
                row = dict(model=label, solver=solver, nfe=nfe, best_fixed=best, fixed=fixed)
                extra = []
                if not a.no_optimize:
                    t0 = time.perf_counter()
                    opt = R.optimize_schedule(model, ns, calib.noise, nfe, solver, reference=calib.x, reference_steps=calib.steps)
                    row["optimized"] = dict(score(opt, solver, "o"), ratio_ci=ratio_ci(errors["o"], ref_errors), seconds=round(time.perf_counter() - t0, 1), selected=opt.info["selected"])
                    extra = [opt]
                t0 = time.perf_counter()
                s = R.learn_schedule(model, ns, calib, nfe, solver, candidates=extra, **opts)
                row["learned"] = dict(score(s, solver, "l"), ratio_ci=ratio_ci(errors["l"], ref_errors), seconds=round(time.perf_counter() - t0, 1), selected=s.info["selected"], best_step=s.info["best_step"], model_evals=s.info["model_evals"])
                row["learned_lam"] = [float(v) for v in np.asarray(s.lam)]
                if solver == "dpmpp2m":  # the S4S-style arm: 2M's per-step coefficients learned with the times
                    t0 = time.perf_counter()
                    sc = R.learn_schedule(model, ns, calib, nfe, solver, candidates=extra, coefficients=True, **opts)
                    with_coefficients = R.learned_solver(sc) if "coefficients" in sc.info else solver
                    row["learned_coefficients"] = dict(score(sc, with_coefficients, "c"), ratio_ci=ratio_ci(errors["c"], ref_errors), seconds=round(time.perf_counter() - t0, 1), selected=sc.info["selected"])
                    row["learned_coefficients_schedule"] = sc.to_dict()
                rows.append(row)
                f, l = fixed[best], row["learned"]
                o = row.get("optimized")
                print(
                    f"  {label} {solver} nfe {nfe}: best fixed {best} RMSE {f['rmse']:.4g} med {f['median']:.4g}"
                    + (f" | optimized {o['rmse']:.4g} ({o['rmse'] / f['rmse']:.2f}x) med {o['median']:.4g} [{o['selected']}]" if o else "")
                    + f" | learned {l['rmse']:.4g} ({l['rmse'] / f['rmse']:.2f}x, 90% {l['ratio_ci'][0]:.2f}-{l['ratio_ci'][1]:.2f}) med {l['median']:.4g} [{l['selected']}, {l['seconds']:.0f}s]"
                    + (f" | +coefficients {row['learned_coefficients']['rmse']:.4g} ({row['learned_coefficients']['rmse'] / f['rmse']:.2f}x) med {row['learned_coefficients']['median']:.4g} [{row['learned_coefficients']['selected']}]" if "learned_coefficients" in row else ""),
                    flush=True,
                )
    meta = dict(
        date=datetime.date.today().isoformat(),
        machine=f"{platform.machine()} {jax.devices()[0].device_kind}, jax {jax.__version__}",
        command="python " + " ".join(["bench/schedules/learned.py", *__import__("sys").argv[1:]]),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    out.with_suffix(".md").write_text(markdown(meta, rows))
    print(f"wrote {out}.md/.json")


def ratio_ci(e, ref, n: int = 2000) -> list[float]:
    """90% paired bootstrap interval of the RMSE ratio of per-sample errors ``e`` to ``ref``."""
    idx = np.random.default_rng(0).integers(0, len(e), (n, len(e)))
    r = np.sqrt(np.mean(e[idx] ** 2, axis=1) / np.mean(ref[idx] ** 2, axis=1))
    return [round(float(v), 3) for v in np.quantile(r, [0.05, 0.95])]


def coef(r, f) -> str:
    """The coefficients arm's cells (2M rows only)."""
    c = r.get("learned_coefficients")
    if c is None:
        return "- | - |"
    fd = f", FD {c['fd']:.3f}" if "fd" in c else ""
    return f"{c['rmse']:.4g} ({c['rmse'] / f['rmse']:.2f}x; {c['ratio_ci'][0]:.2f}-{c['ratio_ci'][1]:.2f}) [{c['selected']}] | {c['median']:.4g} ({c['median'] / f['median']:.2f}x){fd} |"


def markdown(meta, rows) -> str:
    fd = any("fd" in r["learned"] for r in rows)
    L = [
        f"# Learned schedules on held-out noise: {rows[0]['model'] if rows else ''}",
        "",
        f"`{meta['command']}` — {meta['date']}, {meta['machine']}.",
        "",
        "RMSE and median per-sample RMS error to an accurate solve of the same test noise; ratios to the best fixed spacing (by RMSE), with the 90% paired bootstrap interval of the RMSE ratio over the test samples. [selected]: what the held-out guard kept."
        + (" FD: Frechet distance of the evaluation classifier's features to the real digits." if fd else ""),
        "",
        "| model | solver | NFE | best fixed | RMSE | median | optimized RMSE (x) | median (x) | learned RMSE (x) | median (x) |" + (" FD fixed / opt / learned |" if fd else "") + " learned s | learned + 2M coefficients RMSE (x) | median (x) |",
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if fd else "") + "---|---|---|",
    ]
    for r in rows:
        f, l, o = r["fixed"][r["best_fixed"]], r["learned"], r.get("optimized")
        oc = f"{o['rmse']:.4g} ({o['rmse'] / f['rmse']:.2f}x; {o['ratio_ci'][0]:.2f}-{o['ratio_ci'][1]:.2f}) | {o['median']:.4g} ({o['median'] / f['median']:.2f}x)" if o else "- | -"
        fds = f" {f['fd']:.3f} / {o['fd'] if o else float('nan'):.3f} / {l['fd']:.3f} |" if fd else ""
        L.append(
            f"| {r['model']} | {r['solver']} | {r['nfe']} | {r['best_fixed']} | {f['rmse']:.4g} | {f['median']:.4g} | {oc} | "
            f"{l['rmse']:.4g} ({l['rmse'] / f['rmse']:.2f}x; {l['ratio_ci'][0]:.2f}-{l['ratio_ci'][1]:.2f}) | {l['median']:.4g} ({l['median'] / f['median']:.2f}x) [{l['selected']}] |{fds} {l['seconds']:.0f} | {coef(r, f)}"
        )
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    main()
