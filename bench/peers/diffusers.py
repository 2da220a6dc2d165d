"""Peers at equal NFE: diffusers' samplers on our models and test noise, the network in JAX.

    pip install -e ".[peers]"                  # current diffusers + PyTorch (CPU is enough)
    pip install --no-deps --target /tmp/diffusers039 "diffusers==0.39.0"   # its Flax DPM-Solver
    python bench/schedules/compare.py --model gmm        # our side (writes schedules_gmm.json)
    python bench/peers/diffusers.py --model gmm --flax-diffusers /tmp/diffusers039
    python bench/peers/diffusers.py --model digits --flax-diffusers /tmp/diffusers039
    python bench/peers/diffusers.py --model digits_cond --flax-diffusers /tmp/diffusers039   # guidance w = 2

Same model, same test noise (``common.setup``), same reference (DPM-Solver++(2M) over all
1,000 training steps) as ``bench/schedules/compare.py``.  Peers:

- diffusers (the installed release, PyTorch schedulers): UniPC (bh2, orders 2 and 3),
  DPM-Solver++ 2M and 3M, each with and without Karras sigmas, DEIS (orders 2 and 3); all with
  their defaults otherwise (``timestep_spacing="linspace"``, lower order at the final steps,
  last step to clean data);
- diffusers 0.39's Flax DPM-Solver++ (2M, 3M), the last release with Flax schedulers.  It
  cannot share a process with a newer diffusers, so it runs in a subprocess whose
  ``PYTHONPATH`` starts with ``--flax-diffusers``.  Its last step lands on training step 0
  (sigma = 0.01), not on clean data.

Every peer calls the network exactly NFE times (counted).  Cross-check: our 2M, 3M and UniPC
on the timesteps diffusers' schedulers of the same methods visited must give the same samples
to float32 rounding.  Also: uniform DDIM at 50, 100 and
200 steps on the training schedule, the yardstick of the "10 NFE = DDIM-100" question.
Writes ``bench/results/peers_{model}.{md,json}``; the summary puts the best of ours (read from
``schedules_{model}.json``) beside the best peer.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import rbe_jax as R
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/common.py
from common import DEFAULT_TEST, MODELS, rmse_and_median, setup

NFES = [5, 8, 10, 15, 20]
DDIM_STEPS = [50, 100, 200]

TORCH_PEERS = {
    "UniPC bh2, order 2": ("UniPCMultistepScheduler", dict(solver_order=2, solver_type="bh2")),
    "UniPC bh2, order 2, Karras": ("UniPCMultistepScheduler", dict(solver_order=2, solver_type="bh2", use_karras_sigmas=True)),
    "UniPC bh2, order 3": ("UniPCMultistepScheduler", dict(solver_order=3, solver_type="bh2")),
    "DPM-Solver++ 2M": ("DPMSolverMultistepScheduler", dict(solver_order=2, algorithm_type="dpmsolver++")),
    "DPM-Solver++ 2M, Karras": ("DPMSolverMultistepScheduler", dict(solver_order=2, algorithm_type="dpmsolver++", use_karras_sigmas=True)),
    "DPM-Solver++ 3M": ("DPMSolverMultistepScheduler", dict(solver_order=3, algorithm_type="dpmsolver++")),
    "DPM-Solver++ 3M, Karras": ("DPMSolverMultistepScheduler", dict(solver_order=3, algorithm_type="dpmsolver++", use_karras_sigmas=True)),
    "DEIS order 2": ("DEISMultistepScheduler", dict(solver_order=2)),
    "DEIS order 3": ("DEISMultistepScheduler", dict(solver_order=3)),
}
FLAX_PEERS = {"Flax DPM-Solver++ 2M": 2, "Flax DPM-Solver++ 3M": 3}
# Our solver beside the diffusers scheduler that implements the same method.
SAME_METHOD = {"dpmpp2m": "DPM-Solver++ 2M", "dpmpp3m": "DPM-Solver++ 3M", "unipc": "UniPC bh2, order 2"}


def betas_of(full: R.NoiseSchedule) -> np.ndarray:
    """The training betas behind the alpha-bar table (diffusers' ``trained_betas``)."""
    ab = np.asarray(full.alpha_bar, np.float64)
    return 1.0 - ab / np.concatenate([[1.0], ab[:-1]])


def model_fn(model, batch: int):
    """A jitted ``(x, integer timestep) -> eps`` that counts its calls."""
    f = jax.jit(lambda x, t: model(x, jnp.full((batch,), t, jnp.int32)))
    calls = [0]

    def call(x, t):
        calls[0] += 1
        return np.asarray(f(jnp.asarray(x, jnp.float32), int(t)))

    return call, calls


def run_torch(model, full, noise, nfe: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Samples of every PyTorch peer, and the training timesteps each one visited."""
    import diffusers
    import torch

    out, visited = {}, {}
    for name, (cls_name, kw) in TORCH_PEERS.items():
        sch = getattr(diffusers, cls_name)(num_train_timesteps=full.K, trained_betas=betas_of(full), prediction_type="epsilon", **kw)
        sch.set_timesteps(nfe)
        call, calls = model_fn(model, noise.shape[0])
        x = torch.from_numpy(np.array(noise, np.float32))
        for t in sch.timesteps:
            eps = torch.from_numpy(call(x.numpy(), t))
            x = sch.step(eps, t, x).prev_sample
        if calls[0] != nfe:
            raise RuntimeError(f"{name}: {calls[0]} model calls for NFE {nfe}")
        out[name], visited[name] = x.numpy(), sch.timesteps.numpy().astype(np.int64)
    return out, visited


def same_timesteps_check(model, full, noise, nfe, samples, visited) -> list[dict]:
    """Our 2M, 3M and UniPC on the very timesteps diffusers visited (then clean data, as its
    last step), with ``lower_order_final`` set as diffusers sets it (below 15 steps): an
    independent implementation of the same methods, so the samples should agree to float32
    rounding."""
    rows = []
    for ours, theirs in SAME_METHOD.items():
        sched = R.Schedule.from_indices(full, np.append(visited[theirs], -1))  # full grid: index = timestep
        x = np.asarray(R.rbe_sample(model, noise, sched, getattr(R, ours)(lower_order_final=nfe < 15)), np.float64)
        d = x - samples[theirs]
        rows.append(dict(nfe=nfe, solver=ours, peer=theirs, max_abs=float(np.abs(d).max()), rmse=float(np.sqrt(np.mean(d**2)))))
    return rows


def run_flax(model, full, noise, nfe: int) -> dict[str, np.ndarray]:
    from diffusers import FlaxDPMSolverMultistepScheduler

    out = {}
    for name, order in FLAX_PEERS.items():
        sch = FlaxDPMSolverMultistepScheduler(num_train_timesteps=full.K, trained_betas=jnp.asarray(betas_of(full), jnp.float32), solver_order=order, algorithm_type="dpmsolver++")
        state = sch.set_timesteps(sch.create_state(), nfe, noise.shape)
        call, calls = model_fn(model, noise.shape[0])
        x = jnp.asarray(noise, jnp.float32)
        for t in state.timesteps:
            res = sch.step(state, jnp.asarray(call(x, t)), t, x)
            x, state = res.prev_sample, res.state
        if calls[0] != nfe:
            raise RuntimeError(f"{name}: {calls[0]} model calls for NFE {nfe}")
        out[name] = np.asarray(x)
    return out


def flax_in_subprocess(args, flax_dir: str) -> tuple[dict, str]:
    """Runs this script with ``--flax-only`` under diffusers 0.39; returns its samples."""
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "flax.npz"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (flax_dir, os.environ.get("PYTHONPATH")) if p))
        cmd = [sys.executable, __file__, "--model", args.model, "--guidance", str(args.guidance), "--test", str(args.test), "--nfe", *map(str, args.nfe), "--flax-only", str(dest)]
        subprocess.run(cmd, env=env, check=True)
        with np.load(dest) as z:
            version = str(z["version"])
            samples = {k: z[k] for k in z.files if k != "version"}
    return samples, version


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=MODELS, default="gmm")
    ap.add_argument("--guidance", type=float, default=2.0, help="digits_cond: classifier-free guidance weight (default 2)")
    ap.add_argument("--nfe", type=int, nargs="+", default=NFES)
    ap.add_argument("--test", type=int, default=None, help="test samples (gmm 16384, digits and digits_cond 256)")
    ap.add_argument("--flax-diffusers", metavar="DIR", help="a directory holding diffusers 0.39 (pip install --target)")
    ap.add_argument("--flax-only", metavar="NPZ", help=argparse.SUPPRESS)
    ap.add_argument("--render", action="store_true", help="only rewrite the .md from the saved .json and the current schedules_{model}.json")
    args = ap.parse_args()
    args.test = args.test or DEFAULT_TEST[args.model]
    name = f"{args.model}_w{args.guidance:g}" if args.model == "digits_cond" else args.model
    out = Path(f"bench/results/peers_{name}")
    if args.render:
        saved = json.loads(out.with_suffix(".json").read_text())
        write_md(out.with_suffix(".md"), saved["meta"], saved["rows"], saved["ddim"], saved["same_timesteps"], ours_table(name, saved["meta"]["test"]), args.nfe)
        return
    model, full, _, _, test, _ = setup(args.model, 1, args.test, args.guidance)

    if args.flax_only:  # the subprocess: diffusers 0.39 on the path
        import diffusers

        samples = {f"{sampler}|{nfe}": x for nfe in args.nfe for sampler, x in run_flax(model, full, test, nfe).items()}
        np.savez(args.flax_only, version=diffusers.__version__, **samples)
        return

    import diffusers
    import torch

    ref = R.reference_solution(model, full, test, full.K)
    rows, check = [], []
    for nfe in args.nfe:
        samples, visited = run_torch(model, full, test, nfe)
        for sampler, x in samples.items():  # (not `name`: the model's name goes into the results)
            rows.append(dict(nfe=nfe, sampler=f"diffusers {diffusers.__version__} {sampler}", **dict(zip(("rmse", "median"), rmse_and_median(x, ref)))))
            print(rows[-1], flush=True)
        check += same_timesteps_check(model, full, test, nfe, samples, visited)
        print(check[-3:], flush=True)
    if args.flax_diffusers:
        samples, version = flax_in_subprocess(args, args.flax_diffusers)
        for key, x in samples.items():
            sampler, nfe = key.split("|")
            rows.append(dict(nfe=int(nfe), sampler=f"diffusers {version} {sampler}", **dict(zip(("rmse", "median"), rmse_and_median(x, ref)))))
            print(rows[-1], flush=True)
    ddim = []
    for steps in DDIM_STEPS:
        x = R.rbe_sample(model, test, R.baseline_schedule(full, steps, "uniform"), "ddim")
        ddim.append(dict(nfe=steps, sampler="rbe_jax uniform DDIM", **dict(zip(("rmse", "median"), rmse_and_median(x, ref)))))
        print(ddim[-1], flush=True)

    meta = dict(
        date=datetime.date.today().isoformat(),
        machine=f"{platform.machine()} {jax.devices()[0].device_kind}, jax {jax.__version__}, torch {torch.__version__}",
        model=name, command=" ".join(["python bench/peers/diffusers.py", "--model", args.model] + (["--guidance", f"{args.guidance:g}"] if args.model == "digits_cond" else [])), test=args.test, reference=f"dpmpp2m, {full.K} steps",
    )
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows, ddim=ddim, same_timesteps=check), indent=1) + "\n")
    write_md(out.with_suffix(".md"), meta, rows, ddim, check, ours_table(name, args.test), args.nfe)
    print(out.with_suffix(".md").read_text())


def ours_table(name: str, n_test: int) -> dict | None:
    """``bench/schedules/compare.py``'s results for the same model and test noise, if there are any."""
    path = Path(f"bench/results/schedules_{name}.json")
    ours = json.loads(path.read_text()) if path.is_file() else None
    if ours is not None and ours["meta"]["test"] != n_test:
        print(f"{path} was scored on {ours['meta']['test']} test samples, not {n_test}: left out of the summary")
        return None
    return ours


def write_md(path: Path, meta, rows, ddim, check, ours, nfes):
    L = [f"# Peers at equal NFE: {meta['model']} ({meta['date']}, {meta['machine']})", "",
         f"`{meta.get('command', 'python bench/peers/diffusers.py --model ' + meta['model'])}`. {meta['test']} test samples (the test noise of "
         f"`bench/schedules/compare.py`); RMSE to {meta['reference']} from the same noise; the network runs in JAX.", ""]
    names = list(dict.fromkeys(r["sampler"] for r in rows))
    best_ours = {}
    if ours is not None:
        for n in nfes:
            col = [r for r in ours["rows"] if r["nfe"] == n]
            if col:
                best_ours[n] = min(col, key=lambda r: r["rmse"])
    for key, title in (("rmse", "RMSE to the reference"), ("median", "Median per-sample RMSE")):
        L += [f"## {title}", "", "| sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---|" + "---|" * len(nfes)]
        for name in names:
            vals = [next((r[key] for r in rows if r["sampler"] == name and r["nfe"] == n), None) for n in nfes]
            L.append(f"| {name} | " + " | ".join("" if v is None else f"{v:.4f}" for v in vals) + " |")
        if best_ours:
            cells = []
            for n in nfes:
                b = best_ours.get(n)
                peer = min((r[key] for r in rows if r["nfe"] == n), default=None)
                cells.append("" if b is None else f"**{b[key]:.4f}** ({b['solver']}, {b['schedule']})" + ("" if peer is None else f" {b[key] / peer:.2f}x"))
            L.append("| rbe_jax, best by RMSE in schedules_compare | " + " | ".join(cells) + " |")
        L.append("")
    if best_ours:
        L += ["Last row: our best configuration by RMSE at that NFE (from `schedules_" + meta["model"] + ".json`), and its ratio to the best peer.", ""]
    L += ["## Uniform DDIM with many steps (the yardstick)", "", "| steps | RMSE | median |", "|---|---|---|"]
    L += [f"| {r['nfe']} | {r['rmse']:.4f} | {r['median']:.4f} |" for r in ddim]
    L += ["", "## Same method, same timesteps: rbe_jax against diffusers (PyTorch)", "",
          "Our solver on the timesteps the diffusers scheduler visited, `lower_order_final` as diffusers sets it; "
          "difference of the samples (float32 on both sides).", "", "| NFE | ours | diffusers | max abs diff | RMS diff |", "|---|---|---|---|---|"]
    L += [f"| {r['nfe']} | {r['solver']} | {r['peer']} | {r['max_abs']:.1e} | {r['rmse']:.1e} |" for r in check]
    path.write_text("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
