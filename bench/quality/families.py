"""Every family at equal NFE: the same exact Gaussian mixture written as a DDPM table (eps), a
score_sde VP model (score), a VE model (score), an EDM denoiser (x0) and a flow model
(velocity), each sampled by that family's standard samplers and by our configurations, on
test noise that no calibration saw.

    python bench/quality/families.py                       # about 15 minutes on 2 CPU cores
    python bench/quality/families.py --nfe 5 10 --test 1024 --calib 256 --out /tmp/families_small

Reference: the probability-flow ODE of the exact mixture solved in float64 (diffrax Dopri8,
rtol = atol = 1e-10) from the same noise down to the process's least noisy trained point,
then the exact denoiser there: the clean endpoint of a model trained down to that point,
which every sampler's last step to clean data aims at (``rbe_jax.testing.ode_solution``).
Its distance to the ODE's own endpoint at sigma = 0 is printed for each family.

Standard samplers per family (their usual spacings; ``heun`` is EDM's second-order sampler,
Algorithm 1, at NFE 2N - 1 <= the column's NFE; DDIM is the Euler sampler of EDM and of flow
models):

- ddpm: DDIM uniform and quadratic (the DDIM paper's), DPM-Solver++ 2M / 3M and UniPC on
  uniform timesteps (diffusers' "linspace" default), 2M with Karras sigmas, on log-SNR and
  time-quadratic (DPM-Solver's skip types);
- vp (score_sde): Euler (DDIM) uniform in t, 2M uniform, log-SNR and time-quadratic
  (DPM-Solver's), UniPC uniform, Heun Karras;
- ve: Euler uniform in t (geometric in sigma), Heun Karras, 2M Karras, UniPC log-SNR;
- edm: Heun Karras rho = 7 (EDM), Euler Karras, 2M / 3M Karras (k-diffusion, diffusers'
  EDMDPMSolverMultistep), UniPC Karras;
- flow: Euler with SD3's shift 3 (diffusers' FlowMatchEulerDiscrete), Euler uniform, Heun
  shift (FlowMatchHeun), 2M and UniPC shift (diffusers' flow-matching multistep solvers).

With the ``peers`` extra (PyTorch and diffusers), the diffusers schedulers of the same methods
run on the same model and noise: FlowMatchEulerDiscrete (shift 3), and UniPC and DPM-Solver++
with flow sigmas (shift 3) for the flow model; EDMEuler and EDMDPMSolverMultistep (Karras
rho = 7) for the EDM model.  diffusers' flow schedulers apply the shift to an already shifted
training ``sigma_min`` (their last point is ``t = 0.0089`` at shift 3, ours ``0.0030``), so
the cross-check runs our solvers on the points (and, for EDM, the start scale
``sqrt(sigma_max^2 + 1)``) diffusers used and prints the largest difference (their flow UniPC
and DPM-Solver++ feed the network rounded timesteps, so those differ by more).

Ours: UniPC and DPM-Solver++ 2M on a schedule optimized for them (``R.optimize_schedule`` on
the family's 1,000-point grid from the calibration noise, reference = the float64 solve of
that noise), the recommended configuration being optimized UniPC; UniPC on the fixed
spacings; faithful RBE (K = 100 grid) with UniPC.  Scores: RMSE over all test samples, the
median per-sample RMSE, and for the recommended configuration its ratio to the best standard
sampler with a 90% paired bootstrap interval.
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
import jax.numpy as jnp
import numpy as np

import rbe_jax as R
from rbe_jax.core.noise import Point
from rbe_jax.core.schedule import schedule_points
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/common.py
from common import bootstrap_ratio, per_sample_rmse

FAMILIES = {
    "ddpm": (lambda: R.NoiseSchedule.linear(1000), "eps"),
    "vp": (lambda: R.NoiseSchedule.vp_continuous(), "score"),
    "ve": (lambda: R.NoiseSchedule.ve(0.01, 50.0), "score"),
    "edm": (lambda: R.NoiseSchedule.edm(0.002, 80.0), "x0"),
    "flow": (lambda: R.NoiseSchedule.flow(time_scale=1000.0), "velocity"),
}
# (label, solver, baseline kind): the family's standard samplers
STANDARD = {
    "ddpm": [("DDIM uniform", "ddim", "uniform"), ("DDIM quadratic", "ddim", "quadratic"), ("DPM-Solver++ 2M uniform", "dpmpp2m", "uniform"),
             ("DPM-Solver++ 3M uniform", "dpmpp3m", "uniform"), ("UniPC uniform", "unipc", "uniform"), ("DPM-Solver++ 2M Karras", "dpmpp2m", "karras"),
             ("DPM-Solver++ 2M log-SNR", "dpmpp2m", "logsnr"), ("DPM-Solver++ 2M quadratic", "dpmpp2m", "quadratic")],
    "vp": [("Euler uniform", "ddim", "uniform"), ("DPM-Solver++ 2M uniform", "dpmpp2m", "uniform"), ("DPM-Solver++ 2M log-SNR", "dpmpp2m", "logsnr"),
           ("DPM-Solver++ 2M quadratic", "dpmpp2m", "quadratic"), ("UniPC uniform", "unipc", "uniform"), ("Heun Karras", "heun", "karras")],
    "ve": [("Euler uniform", "ddim", "uniform"), ("Heun Karras", "heun", "karras"), ("DPM-Solver++ 2M Karras", "dpmpp2m", "karras"), ("UniPC log-SNR", "unipc", "logsnr")],
    "edm": [("Heun Karras (EDM)", "heun", "karras"), ("Euler Karras", "ddim", "karras"), ("DPM-Solver++ 2M Karras", "dpmpp2m", "karras"),
            ("DPM-Solver++ 3M Karras", "dpmpp3m", "karras"), ("UniPC Karras", "unipc", "karras")],
    "flow": [("Euler shift 3 (SD3)", "ddim", "shift"), ("Euler uniform", "ddim", "uniform"), ("Heun shift 3", "heun", "shift"),
             ("DPM-Solver++ 2M shift 3", "dpmpp2m", "shift"), ("UniPC shift 3", "unipc", "shift")],
}
OURS_FIXED = ["uniform", "quadratic", "logsnr", "karras", "shift"]
CALIB_KEY, TEST_KEY = 303, 404


def heun_sample(model, noise, schedule):
    """EDM's deterministic Heun sampler (Karras et al. 2022, Alg. 1) on ``schedule``'s points:
    Euler steps corrected by the trapezoid rule except the last (NFE = 2 nfe - 1); in sigma
    for VP, VE and EDM models (``dy/dsigma = eps`` with ``y = x / alpha``), in ``t`` for flow
    models (``dx/dt = eps - x0``)."""
    den = R.core.models.as_denoiser(model, schedule.noise_schedule)
    pts = schedule_points(schedule, jnp.float32)
    flow = den.process.family == "flow"
    return _heun_jit(den, noise, pts, flow)


def _heun(den, z, pts: Point, flow: bool):
    m = pts.lam.shape[0] - 1
    at = lambda i: Point(*(v[i] for v in pts))
    time_of = lambda i: pts.sigma[i] * pts.scale[i] if flow else pts.sigma[i] / pts.alpha[i]  # flow t, or sigma
    to_u = lambda x, i: x * pts.scale[i] if flow else x / pts.alpha[i]  # the model's x, or x / alpha
    from_u = lambda u, i: u / pts.scale[i] if flow else u * pts.alpha[i]

    def slope(x, i):
        p = den(x, at(i))
        return p.eps - p.x0 if flow else p.eps

    def step(x, i):  # Euler, then the trapezoid with the slope at the Euler point
        t, t1, d = time_of(i), time_of(i + 1), slope(x, i)
        u = to_u(x, i)
        d1 = slope(from_u(u + (t1 - t) * d, i + 1), i + 1)
        return from_u(u + (t1 - t) * 0.5 * (d + d1), i + 1), None

    x = den.process.start(z, pts.sigma[0])
    x, _ = jax.lax.scan(step, x, jnp.arange(m - 1))
    return to_u(x, m - 1) - time_of(m - 1) * slope(x, m - 1)  # the last step to clean data: Euler


_heun_jit = jax.jit(_heun, static_argnames=("flow",))


def diffusers_peers(name, user_model, noise, nfe):
    """``{label: (samples, the model times of the points its solver stepped through)}`` of
    diffusers' PyTorch schedulers on the family ``name`` (flow or EDM; the network stays in
    JAX), or ``{}`` without diffusers.  (diffusers' flow UniPC and DPM-Solver++ feed the
    network the rounded timestep of each point.)"""
    try:
        import torch
        from diffusers import DPMSolverMultistepScheduler, EDMDPMSolverMultistepScheduler, EDMEulerScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
    except ImportError:
        return {}
    net = jax.jit(lambda x, t: user_model(x, jnp.full((x.shape[0],), t, x.dtype)))
    if name == "flow":
        makers = {
            "diffusers FlowMatchEuler shift 3": lambda: FlowMatchEulerDiscreteScheduler(shift=3.0),
            "diffusers UniPC flow shift 3": lambda: UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction"),
            "diffusers DPM-Solver++ 2M flow shift 3": lambda: DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction"),
        }
    elif name == "edm":
        makers = {"diffusers EDMEuler Karras": lambda: EDMEulerScheduler(), "diffusers EDMDPMSolverMultistep 2M Karras": lambda: EDMDPMSolverMultistepScheduler()}
    else:
        return {}
    out = {}
    for label, make in makers.items():
        sch = make()
        sch.set_timesteps(nfe)
        x = torch.from_numpy(np.asarray(noise, np.float32)) * float(getattr(sch, "init_noise_sigma", 1.0))
        for t in sch.timesteps:
            if name == "flow":
                y = torch.from_numpy(np.asarray(net(jnp.asarray(x.numpy()), float(t))))
            else:  # EDM: the network F such that diffusers' preconditioning gives our denoiser D
                sch.scale_model_input(x, t)
                sigma = float(sch.sigmas[sch.step_index])
                d = torch.from_numpy(np.asarray(net(jnp.asarray(x.numpy()), sigma)))
                sd = float(sch.config.sigma_data)
                c_skip, c_out = sd**2 / (sigma**2 + sd**2), sigma * sd / (sigma**2 + sd**2) ** 0.5
                y = (d - c_skip * x) / c_out
            x = sch.step(y, t, x).prev_sample
        sig = sch.sigmas.numpy().astype(np.float64)[:-1]
        start = float(getattr(sch, "init_noise_sigma", 1.0)) / (1.0 if name == "flow" else float(sig[0]))  # EDM: sqrt(sigma_max^2 + 1)
        out[label] = (x.numpy(), 1000.0 * sig if name == "flow" else sig, start)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50])
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--components", type=int, default=10)
    ap.add_argument("--calib", type=int, default=1024)
    ap.add_argument("--test", type=int, default=4096)
    ap.add_argument("--out", default="bench/results/families")
    args = ap.parse_args()
    base = R.testing.GaussianMixture.random(0, args.dim, args.components, R.NoiseSchedule.vp_continuous())
    calib = jax.random.normal(jax.random.key(CALIB_KEY), (args.calib, args.dim))
    test = jax.random.normal(jax.random.key(TEST_KEY), (args.test, args.dim))
    results, meta_fam = {}, {}
    for name in args.families:
        ns, pred = FAMILIES[name][0](), FAMILIES[name][1]
        model = base.as_family(ns, pred).denoiser
        lo, hi = ns.lam_range
        t0 = time.perf_counter()
        with jax.enable_x64(True):
            gm64 = R.testing.GaussianMixture.random(0, args.dim, args.components, R.NoiseSchedule.vp_continuous(), dtype=jnp.float64)
            start = lambda z: np.asarray(z, np.float64) * float(ns.prior_std(np.asarray(lo)))
            ref_test = np.asarray(R.testing.ode_solution(gm64, start(test), lo, hi))
            ref_calib = np.asarray(R.testing.ode_solution(gm64, start(calib), lo, hi))
            exact_end = np.asarray(R.testing.ode_solution(gm64, start(test[:256]), lo))
        truncation = float(np.sqrt(np.mean((exact_end - ref_test[:256]) ** 2)))
        meta_fam[name] = dict(noise_schedule=ns.describe(), prediction=pred, lam_range=[lo, hi], reference_seconds=round(time.perf_counter() - t0, 1), truncation_rmse=truncation)
        print(f"{name}: references {time.perf_counter() - t0:.0f}s; the model's endpoint vs the ODE's at sigma = 0: RMSE {truncation:.2e}", flush=True)
        rows = []

        def score(label, group, x, nfe_used, nfe):
            mse = per_sample_rmse(x, ref_test) ** 2
            rows.append(dict(nfe=nfe, nfe_used=nfe_used, sampler=label, group=group, rmse=float(np.sqrt(mse.mean())), median=float(np.sqrt(np.median(mse))), mse=mse))

        for nfe in args.nfe:
            for label, (x, visited, start) in diffusers_peers(name, base.as_family(ns, pred), test, nfe).items():
                score(label, "standard", x, nfe, nfe)
                same = R.Schedule.from_times(ns, visited)  # our solver of the same method on diffusers' points and start
                solver = "ddim" if "Euler" in label else "unipc" if "UniPC" in label else "dpmpp2m"
                ours = np.asarray(R.rbe_sample(model, test * start, same, solver))
                rows[-1]["cross_check_max_abs"] = float(np.max(np.abs(ours - x)))
                print(f"  {label}: ours on the same points, max |difference| {rows[-1]['cross_check_max_abs']:.2e}", flush=True)
            for label, solver, kind in STANDARD[name]:
                if solver == "heun":
                    steps = (nfe + 1) // 2
                    x = heun_sample(model, test, R.baseline_schedule(ns, steps, kind))
                    score(label, "standard", x, 2 * steps - 1, nfe)
                else:
                    score(label, "standard", R.rbe_sample(model, test, R.baseline_schedule(ns, nfe, kind), solver), nfe, nfe)
            for kind in OURS_FIXED:
                try:
                    s = R.baseline_schedule(ns, nfe, kind)
                except ValueError:
                    continue
                score(f"UniPC {kind}", "ours fixed", R.rbe_sample(model, test, s, R.unipc()), nfe, nfe)
            if nfe < 100:
                rbe = R.calibrate(model, ns.respace(100), calib, nfe)
                score("UniPC on RBE (K = 100)", "ours", R.rbe_sample(model, test, rbe, R.unipc()), nfe, nfe)
            for solver in ("unipc", "dpmpp2m"):
                t1 = time.perf_counter()
                opt = R.optimize_schedule(model, ns, calib, nfe, solver, reference=jnp.asarray(ref_calib, jnp.float32), max_sweeps=1, trim=0.005)
                label = f"{'UniPC' if solver == 'unipc' else 'DPM-Solver++ 2M'} optimized"
                score(label, "recommended" if solver == "unipc" else "ours", R.rbe_sample(model, test, opt, solver), nfe, nfe)
                rows[-1]["optimize_seconds"] = round(time.perf_counter() - t1, 1)
                rows[-1]["start"] = opt.info["start"]
            col = [r for r in rows if r["nfe"] == nfe]
            best = min((r for r in col if r["group"] == "standard"), key=lambda r: r["rmse"])
            rec = next(r for r in col if r["group"] == "recommended")
            rec["vs_best_standard"] = dict(best=best["sampler"], ratio=rec["rmse"] / best["rmse"], interval90=bootstrap_ratio(rec["mse"], best["mse"]),
                                           median_ratio=rec["median"] / best["median"])
            for r in col:
                print(f"  {name} nfe={nfe} {r['sampler']:32s} rmse {r['rmse']:.5f} median {r['median']:.5f}", flush=True)
            print(f"  -> recommended / best standard ({best['sampler']}): {rec['vs_best_standard']['ratio']:.3f}", flush=True)
        for r in rows:
            r.pop("mse")
        results[name] = rows
    meta = dict(
        date=datetime.date.today().isoformat(),
        machine=f"{platform.machine()} {jax.devices()[0].device_kind}, jax {jax.__version__}",
        mixture=f"{args.dim}-d, {args.components} components (std 0.02-0.2), the same data in every family",
        calib=args.calib, test=args.test, families=meta_fam,
        command=" ".join(["python bench/quality/families.py", *sys.argv[1:]]),
    )
    Path(args.out + ".json").write_text(json.dumps(dict(meta=meta, results=results), indent=1) + "\n")
    Path(args.out + ".md").write_text(markdown(meta, results, args.nfe))
    print(Path(args.out + ".md").read_text())


def markdown(meta, results, nfes) -> str:
    L = [f"# Every family at equal NFE ({meta['date']}, {meta['machine']})", "",
         f"`{meta['command']}`. Data: {meta['mixture']}. Test noise: {meta['test']} samples; calibration (RBE, optimized) "
         f"on {meta['calib']} other samples. Reference: the float64 ODE solve to each process's least noisy trained point, "
         "then the exact denoiser (the model's own clean endpoint).", "",
         "## Summary: the recommended configuration (UniPC, optimized schedule) against the best standard sampler", "",
         "| family | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---|" + "---|" * len(nfes)]
    for name, rows in results.items():
        cells = []
        for n in nfes:
            rec = next(r for r in rows if r["nfe"] == n and r["group"] == "recommended")
            v = rec["vs_best_standard"]
            cells.append(f"{v['ratio']:.2f}x ({v['interval90'][0]:.2f}-{v['interval90'][1]:.2f}) vs {v['best']}, median {v['median_ratio']:.2f}x")
        L.append(f"| {name} | " + " | ".join(cells) + " |")
    L += ["", "Ratio of RMSEs (90% paired bootstrap interval over test samples), and of median per-sample RMSEs.", ""]
    for name, rows in results.items():
        f = meta["families"][name]
        L += [f"## {name}: `{f['noise_schedule']}`, prediction {f['prediction']}", "",
              f"Lambda range [{f['lam_range'][0]:.3g}, {f['lam_range'][1]:.3g}]; the model's endpoint is {f['truncation_rmse']:.1e} (RMSE) "
              "from the ODE's endpoint at sigma = 0.", "",
              "| sampler | group | " + " | ".join(f"NFE {n}: RMSE / median" for n in nfes) + " |", "|---|---|" + "---|" * len(nfes)]
        for label in dict.fromkeys(r["sampler"] for r in rows):
            cells = []
            for n in nfes:
                r = next((r for r in rows if r["nfe"] == n and r["sampler"] == label), None)
                if r is None:
                    cells.append("")
                    continue
                best = min(x["rmse"] for x in rows if x["nfe"] == n)
                cell = f"{r['rmse']:.4f} / {r['median']:.4f}"
                cells.append((f"**{cell}**" if r["rmse"] <= best else cell) + (f" ({r['nfe_used']})" if r["nfe_used"] != n else ""))
            group = next(r["group"] for r in rows if r["sampler"] == label)
            L.append(f"| {label} | {group} | " + " | ".join(cells) + " |")
        L += ["", "(n): the NFE actually used (Heun: 2N - 1). Bold: lowest RMSE in the column.", ""]
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    main()
