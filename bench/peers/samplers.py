"""Other samplers side by side with rbe_sample, on the shipped digits model, in one run.

- Quality at (about) equal NFE from the same noise: RMSE to a 1000-step DDIM solve and
  classifier FD, for rbe_sample (RBE schedule; DDIM and DPM-Solver++(2M)), the diffusers
  0.39 Flax DPM-Solver multistep scheduler, and diffrax adaptive solvers (Heun, Tsit5 with a
  PID controller) whose NFE is counted at every model call, rejected steps and all stages
  included.
- Speed at NFE 10 and 20, batch 64: rbe_sample (one lax.scan) vs a Python loop of jitted
  steps vs the diffusers scheduler (jitted fori_loop, as its Flax pipelines run it, and a
  Python loop); compile time of rbe_sample at NFE 5 and 50.
- Calibration: time against one sampling run, and the compiled adaptive loop's memory
  against batch size, with and without chunking.

    pip install -e ".[bench]" "diffusers==0.39.0"
    python bench/peers/samplers.py            # writes bench/results/samplers.{md,json}
"""

from __future__ import annotations

import sys

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import rbe_jax as R
from rbe_jax.rbe.adaptive import _adaptive_loop_jit
from rbe_jax.zoo.checkpoint import load_model_info, pretrained_path
from rbe_jax.zoo.data import load_digits
from rbe_jax.zoo.metrics import frechet_distance, train_digit_classifier
from rbe_jax.core.solvers import get_solver
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/common.py
from common import python_loop


def best_time(fn, repeats=5):
    jax.block_until_ready(fn())
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t0)
    return min(ts)


def continuous_timestep(ns: R.NoiseSchedule):
    """alpha-bar -> fractional training timestep, interpolating log alpha-bar (monotone)."""
    x = jnp.asarray(-np.log(ns.alpha_bar), jnp.float32)  # increasing with t
    ts = jnp.arange(ns.alpha_bar.size, dtype=jnp.float32)
    return lambda a: jnp.interp(-jnp.log(a), x, ts)


def diffrax_sample(model, ns, grid, noise, solver_name, rtol):
    """Adaptive solve of the probability-flow ODE in s = sigma / alpha from grid point K-1 to
    grid point 0, then one denoising call to clean data.  Every model call is counted."""
    import diffrax

    calls = np.zeros((), np.int64)

    def count():
        calls[...] += 1

    to_t = continuous_timestep(ns)
    a_hi, a_lo = float(grid.alpha_bar[-1]), float(grid.alpha_bar[0])
    s0, s1 = np.sqrt((1 - a_hi) / a_hi), np.sqrt((1 - a_lo) / a_lo)
    B = noise.shape[0]

    def eps_at(x, a):
        jax.debug.callback(count)
        return model(x, jnp.full((B,), to_t(a)))

    def vf(s, y, args):
        a = 1.0 / (1.0 + s * s)
        return eps_at(jnp.sqrt(a) * y, a)

    solver = {"heun": diffrax.Heun(), "tsit5": diffrax.Tsit5()}[solver_name]

    @jax.jit
    def run(noise):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(vf), solver, t0=s0, t1=s1, dt0=None, y0=noise / np.sqrt(a_hi),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=rtol), max_steps=4096,
        )
        x = np.sqrt(a_lo) * sol.ys[-1]
        eps = eps_at(x, jnp.float32(a_lo))
        return (x - np.sqrt(1 - a_lo) * eps) / np.sqrt(a_lo), sol.stats

    out, stats = run(noise)
    out = jax.block_until_ready(out)
    return np.asarray(out), int(calls), {k: int(v) for k, v in stats.items() if np.ndim(v) == 0}


def make_diffusers(nfe, shape):
    from diffusers import FlaxDPMSolverMultistepScheduler

    sch = FlaxDPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
        solver_order=2, algorithm_type="dpmsolver++",
    )
    state = sch.set_timesteps(sch.create_state(), nfe, shape)
    return sch, state


def diffusers_fori(model, noise, nfe):
    sch, state0 = make_diffusers(nfe, noise.shape)

    @jax.jit
    def run(noise, state):
        def body(i, carry):
            x, st = carry
            t = st.timesteps[i]
            out = sch.step(st, model(x, jnp.full((x.shape[0],), t, jnp.int32)), t, x)
            return out.prev_sample, out.state

        return jax.lax.fori_loop(0, nfe, body, (noise, state))[0]

    return lambda: run(noise, state0)


def diffusers_python_loop(model, noise, nfe):
    sch, state0 = make_diffusers(nfe, noise.shape)

    @jax.jit
    def one(x, st, t):
        out = sch.step(st, model(x, jnp.full((x.shape[0],), t, jnp.int32)), t, x)
        return out.prev_sample, out.state

    def run():
        x, st = noise, state0
        for t in np.asarray(state0.timesteps):
            x, st = one(x, st, int(t))
        return x

    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256, help="samples for the quality rows")
    ap.add_argument("--out", default="bench/results/samplers")
    args = ap.parse_args()

    path = pretrained_path("digits")
    info = load_model_info(path)
    ns, grid = info.noise_schedule, info.default_grid
    model = R.load_pretrained("digits")
    images, labels = load_digits(16)
    clf = train_digit_classifier(images, labels, seed=0)
    real_f, _ = clf.features_and_probs(images)
    sample = jax.jit(R.rbe_sample)
    noise = jax.random.normal(jax.random.key(0), (args.n, *info.image_shape))

    t0 = time.perf_counter()
    ref = np.asarray(sample(model, noise, R.baseline_schedule(ns, 1000, "uniform"), R.ddim()))
    print(f"1000-step DDIM reference: {time.perf_counter() - t0:.0f}s")

    def score(x):
        f, p = clf.features_and_probs(x)
        return dict(rmse=float(np.sqrt(np.mean((x - ref) ** 2))), fd=frechet_distance(f, real_f), confident=float(np.mean(p.max(1) >= 0.9)))

    quality = []
    for nfe in (10, 20):
        rbe = R.Schedule.load(path / "schedules" / f"rbe_nfe{nfe}.json", grid)
        for solver in ("ddim", "dpmpp2m"):
            x = np.asarray(sample(model, noise, rbe, get_solver(solver)))
            quality.append(dict(sampler=f"rbe_jax RBE + {solver}", nfe=nfe, **score(x)))
        x = np.asarray(diffusers_fori(model, noise, nfe)())
        quality.append(dict(sampler="diffusers 0.39 FlaxDPMSolverMultistep (2M, dpmsolver++)", nfe=nfe, **score(x)))
        print(quality[-3:])
    for name in ("heun", "tsit5"):
        for rtol in (1e-2, 1e-3):
            x, calls, stats = diffrax_sample(model, ns, grid, noise, name, rtol)
            quality.append(dict(sampler=f"diffrax {name}, PID rtol=atol={rtol:g}", nfe=calls, steps=stats.get("num_steps"), rejected=stats.get("num_rejected_steps"), **score(x)))
            print(quality[-1])

    speed = []
    B = 64
    xb = noise[:B] if args.n >= B else jax.random.normal(jax.random.key(0), (B, *info.image_shape))
    for nfe in (10, 20):
        sched = R.baseline_schedule(grid, nfe, "uniform")
        t_scan = best_time(lambda: sample(model, xb, sched, R.ddim()))
        run = python_loop(model, sched)
        t_loop = best_time(lambda: run(xb))
        t_dfori = best_time(diffusers_fori(model, xb, nfe))
        t_dloop = best_time(diffusers_python_loop(model, xb, nfe))
        speed.append(dict(nfe=nfe, batch=B, scan_ms=1e3 * t_scan, loop_ms=1e3 * t_loop, diffusers_fori_ms=1e3 * t_dfori, diffusers_loop_ms=1e3 * t_dloop))
        print(speed[-1])
    compile_s = {}
    for nfe in (5, 50):
        sched = R.baseline_schedule(grid, nfe, "uniform")
        t0 = time.perf_counter()
        jax.jit(R.rbe_sample).lower(model, xb, sched).compile()
        compile_s[nfe] = time.perf_counter() - t0
    print("compile", compile_s)

    calib_noise = jax.random.normal(jax.random.key(1), (256, *info.image_shape))
    t0 = time.perf_counter()
    s10 = R.calibrate(model, grid, calib_noise, 10)
    t_cal = time.perf_counter() - t0
    t_one = best_time(lambda: sample(model, calib_noise, s10, R.ddim()), repeats=2)
    calibration = dict(batch=256, nfe=10, calibrate_s=t_cal, sample_s=t_one, ratio=t_cal / t_one, runs=s10.info["search_runs"], evals=s10.info["calibration_evals"])
    memory = []
    ext = jnp.asarray(grid.alpha_bar_ext, jnp.float32)
    pts = R.core.noise.Point(*(jnp.asarray(v, jnp.float32) for v in grid.grid_points()))
    den = R.core.models.as_denoiser(model, grid)
    for b in (64, 256, 1024):
        x = jax.ShapeDtypeStruct((b, *info.image_shape), jnp.float32)
        m = _adaptive_loop_jit.lower(den, pts, x, grid.K - 1, ext, 1.0, 22).compile().memory_analysis()
        memory.append(dict(batch=b, temp_mib=m.temp_size_in_bytes / 2**20, argument_mib=m.argument_size_in_bytes / 2**20, output_mib=m.output_size_in_bytes / 2**20))
    print(calibration, memory)

    meta = dict(date=datetime.date.today().isoformat(), machine=f"{platform.machine()} {jax.devices()[0].device_kind}, jax {jax.__version__}", n=args.n)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(dict(meta=meta, quality=quality, speed=speed, compile_s=compile_s, calibration=calibration, memory=memory), indent=1))
    L = [f"# Other samplers on the shipped digits model ({meta['date']}, {meta['machine']})", "",
         f"{args.n} samples from the same noise; RMSE to a 1000-step DDIM solve from that noise; FD in the evaluation classifier's feature space to the real digits.", "",
         "| sampler | NFE | RMSE to 1000-step DDIM | classifier FD | confidence >= 0.9 |", "|---|---|---|---|---|"]
    for q in quality:
        extra = f" ({q['steps']} steps, {q['rejected']} rejected)" if "steps" in q else ""
        L.append(f"| {q['sampler']} | {q['nfe']}{extra} | {q['rmse']:.4f} | {q['fd']:.2f} | {q['confident']:.3f} |")
    L += ["", f"## Wall time, batch {B} (best of 5, after compilation)", "", "| NFE | rbe_sample (scan) ms | Python loop of jitted steps ms | diffusers, jitted fori_loop ms | diffusers, Python loop ms | loop / scan | diffusers fori / scan |", "|---|---|---|---|---|---|---|"]
    for s in speed:
        L.append(f"| {s['nfe']} | {s['scan_ms']:.1f} | {s['loop_ms']:.1f} | {s['diffusers_fori_ms']:.1f} | {s['diffusers_loop_ms']:.1f} | {s['loop_ms'] / s['scan_ms']:.2f}x | {s['diffusers_fori_ms'] / s['scan_ms']:.2f}x |")
    L += ["", f"Compile time of `jax.jit(rbe_sample)`: {compile_s[5]:.2f} s at NFE 5, {compile_s[50]:.2f} s at NFE 50 (the scan body is compiled once, whatever the NFE).", "",
          f"Calibration at NFE 10 on 256 samples: {calibration['calibrate_s']:.1f} s ({calibration['runs']} search runs on 64 samples + 1 full run, {calibration['evals']} batched forward+VJP passes) = {calibration['ratio']:.0f}x one sampling run of the same batch ({calibration['sample_s']:.2f} s).", "",
          "Memory of the compiled adaptive loop (XLA's own accounting; temp = working memory):", "", "| batch | temp MiB | arguments MiB | outputs MiB |", "|---|---|---|---|"]
    for m in memory:
        L.append(f"| {m['batch']} | {m['temp_mib']:.1f} | {m['argument_mib']:.1f} | {m['output_mib']:.1f} |")
    L += ["", "Working memory grows with the batch (here faster than linearly from 256 to 1024); `calibrate(..., chunk_size=64)` runs the loop compiled for 64 samples, so it stays at the 64-sample figure, with the same schedule.", ""]
    Path(args.out + ".md").write_text("\n".join(L))
    print("\n".join(L))


if __name__ == "__main__":
    main()
