"""Do learned solver coefficients (S4S-style) beat learned times alone?  A measurement, not a
product feature: the library ships the coefficients only if they win by 5% RMSE on held-out
noise.

The solver is DPM-Solver++(2M) written with one free coefficient per step on the multistep
history: step i uses ``D_i = x0_i + (1 / (2 r_i) + c_i)(x0_i - x0_{i-1}) + e_i (x0_{i-1} -
x0_{i-2})`` (``r_i = h_{i-1} / h_i``; the final step to clean data returns ``D``), which is
exactly 2M at ``c = e = 0`` (checked against ``rbe_sample`` below).  Both arms start from the
same schedule (the quadratic spacing), are trained with the same optimiser, steps and data
(Adam, the fitted part of the calibration noise, the best iterate on the held-out part):

- ``times``: the schedule's points only (``c = e = 0``), i.e. ``learn_schedule``'s problem;
- ``times+coefficients``: the points and ``c``, ``e`` (S4S-Alt learns them alternately; here
  jointly).

    python bench/schedules/coefficients.py --model gmm
    python bench/schedules/coefficients.py --model digits --nfe 5 10 --steps 100

Writes bench/results/learned_coefficients_<model>.{md,json}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rbe_jax as R
from rbe_jax.tuning.learn import _lam_of, _Range, _theta_of
from rbe_jax.core.models import as_denoiser
from rbe_jax.core.noise import Point


def sample(den, ns, noise, lam, c, e):
    """The 2M sampler with per-step history coefficients (see the module docstring)."""
    pts = ns.points(lam, jnp)
    nfe = lam.shape[0] - 1
    h = pts.lam[1:] - pts.lam[:-1]
    x, x0s = noise, []
    for i in range(nfe):
        x0 = den(x, Point(*(v[i] for v in pts))).x0
        d = x0
        if i >= 1:
            c2m = 0.0 if i == nfe - 1 else h[i] / (2.0 * h[i - 1])  # 1 / (2 r); the final step is first order in 2M
            d = d + (c2m + c[i]) * (x0 - x0s[-1])
        if i >= 2:
            d = d + e[i] * (x0s[-1] - x0s[-2])
        x = d if i == nfe - 1 else (pts.sigma[i + 1] / pts.sigma[i]) * x - pts.alpha[i + 1] * jnp.expm1(-h[i]) * d
        x0s.append(x0)
    return x


def run(den, ns, nfe, calib, test, steps, lr, batch, learn_coeffs, seed=0):
    r = _Range(*ns.lam_range)
    n = calib.noise.shape[0]
    fit, held = calib.take(slice(0, n - n // 4)), calib.take(slice(n - n // 4, n))
    theta = jnp.asarray(_theta_of(np.asarray(R.baseline_schedule(ns, nfe, "quadratic").lam), r), jnp.float32)
    params = (theta, jnp.zeros(nfe), jnp.zeros(nfe))
    opt = optax.adam(optax.warmup_cosine_decay_schedule(0.0, lr, 10, steps, lr * 0.01))
    state = opt.init(params)

    def loss(p, x, y):
        th, c, e = p
        if not learn_coeffs:
            c, e = jnp.zeros_like(c), jnp.zeros_like(e)
        out = sample(den, ns, x, _lam_of(th, r), c, e)
        return jnp.mean((out - y) ** 2)

    @jax.jit
    def update(p, s, x, y):
        v, g = jax.value_and_grad(loss)(p, x, y)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, v

    ev = jax.jit(lambda p, x, y: loss(p, x, y))
    rng = np.random.default_rng(seed)
    best, best_p = float(ev(params, held.noise, held.x)), params
    for k in range(1, steps + 1):
        rows = rng.choice(fit.noise.shape[0], min(batch, fit.noise.shape[0]), replace=False)
        params, state, _ = update(params, state, fit.noise[rows], fit.x[rows])
        if k % 10 == 0:
            h = float(ev(params, held.noise, held.x))
            if h < best:
                best, best_p = h, params
    th, c, e = best_p
    if not learn_coeffs:
        c, e = jnp.zeros_like(c), jnp.zeros_like(e)
    out = jax.jit(lambda x: sample(den, ns, x, _lam_of(th, r), c, e))(test.noise)
    err = np.sqrt(np.mean(np.reshape(np.asarray(out) - np.asarray(test.x), (out.shape[0], -1)) ** 2, axis=1))
    return dict(rmse=float(np.sqrt(np.mean(err**2))), median=float(np.median(err)), c=np.asarray(c).round(4).tolist(), e=np.asarray(e).round(4).tolist())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gmm", choices=("gmm", "digits"))
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 10])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--batch", type=int, default=None)
    a = ap.parse_args()
    if a.model == "gmm":
        ns = R.NoiseSchedule.linear(1000)
        model, shape, n_calib, n_test, tsteps, batch = R.testing.GaussianMixture.random(0, 24, 7, ns), (24,), 1024, 2048, None, a.batch or 128
    else:
        ns = R.model_info("digits").noise_schedule
        model, shape, n_calib, n_test, tsteps, batch = R.load_denoiser("digits"), (16, 16, 1), 256, 256, 250, a.batch or 32
    den = as_denoiser(model, ns)
    calib = R.make_teacher(model, ns, jax.random.normal(jax.random.key(101), (n_calib, *shape)), tsteps)
    test = R.make_teacher(model, ns, jax.random.normal(jax.random.key(202), (n_test, *shape)), tsteps)
    # the parametrised sampler at c = e = 0 is DPM-Solver++(2M)
    q = R.baseline_schedule(ns, a.nfe[0], "quadratic")
    mine = sample(den, ns, test.noise[:16], jnp.asarray(q.lam, jnp.float32), jnp.zeros(a.nfe[0]), jnp.zeros(a.nfe[0]))
    ref = R.rbe_sample(model, test.noise[:16], q, "dpmpp2m")
    assert float(jnp.max(jnp.abs(mine - ref))) < 1e-3, "the parametrised sampler should be 2M at c = e = 0"
    rows = []
    for nfe in a.nfe:
        row = dict(nfe=nfe)
        for arm, coeffs in (("times", False), ("times+coefficients", True)):
            t0 = time.perf_counter()
            row[arm] = dict(run(den, ns, nfe, calib, test, a.steps, a.lr, batch, coeffs), seconds=round(time.perf_counter() - t0, 1))
        row["ratio"] = row["times+coefficients"]["rmse"] / row["times"]["rmse"]
        rows.append(row)
        print(f"nfe {nfe}: times {row['times']['rmse']:.4g} (median {row['times']['median']:.4g}); times+coefficients "
              f"{row['times+coefficients']['rmse']:.4g} (median {row['times+coefficients']['median']:.4g}): {row['ratio']:.3f}x", flush=True)
    meta = dict(date=datetime.date.today().isoformat(), machine=f"{platform.machine()} {jax.devices()[0].device_kind}, jax {jax.__version__}",
                command="python bench/schedules/coefficients.py " + " ".join(__import__("sys").argv[1:]), calib=n_calib, test=n_test)
    out = Path(f"bench/results/learned_coefficients_{a.model}")
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    L = [f"# Learned 2M coefficients vs learned times alone: {a.model}", "", f"`{meta['command']}` — {meta['date']}, {meta['machine']}; {n_calib} calibration samples (a quarter held out), {n_test} test samples; RMSE to an accurate solve.", "",
         "| NFE | times: RMSE | median | times+coefficients: RMSE | median | ratio |", "|---|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['nfe']} | {r['times']['rmse']:.4g} | {r['times']['median']:.4g} | {r['times+coefficients']['rmse']:.4g} | {r['times+coefficients']['median']:.4g} | {r['ratio']:.3f}x |")
    out.with_suffix(".md").write_text("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
