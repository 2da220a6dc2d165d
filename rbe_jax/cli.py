"""The ``rbe-jax`` console script: sample, calibrate, train, info.

    rbe-jax sample --nfe 10 --out samples.png
    rbe-jax calibrate --nfe 12 --out schedule.json
    rbe-jax train --workdir runs/digits --export my_model
    rbe-jax info PATH
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

__all__ = ["main"]

SCHEDULE_KINDS = ("rbe", "uniform", "quadratic", "logsnr")


class CLIError(Exception):
    """An error to report as one line, without a traceback."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        raise CLIError(f"{self.prog}: error: {message} (see --help)")


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {s}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rbe-jax", description="Fast diffusion sampling with the RBE schedule (JAX/Flax).")
    sub = p.add_subparsers(dest="command", metavar="{sample,calibrate,train,info}", parser_class=_Parser)
    sub.required = True

    s = sub.add_parser("sample", help="sample images from a model on a fixed schedule")
    s.add_argument("--nfe", type=_positive_int, default=10, help="network evaluations (default 10)")
    s.add_argument("--solver", choices=("ddim", "dpmpp2m"), default="ddim")
    s.add_argument("--schedule", default="rbe", help="rbe | uniform | quadratic | logsnr | FILE.json (default rbe)")
    s.add_argument("--n", type=_positive_int, default=64, help="number of samples (default 64)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="samples.png", help="PNG grid to write (default samples.png)")
    s.add_argument("--npz", default=None, help="also write the raw samples and the schedule here")
    s.add_argument("--checkpoint", default=None, help="model directory (default: the shipped digits model; with --label, the shipped class-conditional one)")
    s.add_argument("--out-dir", default=None, help="sampling job: write numbered .npz shards and a manifest here (resumable)")
    s.add_argument("--batch", type=_positive_int, default=512, help="samples per shard with --out-dir (default 512)")
    s.add_argument("--label", type=int, default=None, help="class label (class-conditional models)")
    s.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance weight w (default 0)")

    c = sub.add_parser("calibrate", help="calibrate an RBE schedule of exactly --nfe steps")
    c.add_argument("--nfe", type=_positive_int, required=True)
    c.add_argument("--out", required=True, help="schedule JSON to write")
    c.add_argument("--checkpoint", default=None, help="model directory (default: the shipped digits model)")
    c.add_argument("--n", type=_positive_int, default=256, help="calibration samples (default 256)")
    c.add_argument("--seed", type=int, default=1234, help="seed of the calibration noise")
    c.add_argument("--tau", type=_positive_float, default=None, help="fixed threshold (default: searched)")

    t = sub.add_parser("train", help="train a U-Net on the digits data set (needs the train extra)")
    t.add_argument("--workdir", required=True, help="checkpoint directory; an interrupted run resumes from it")
    t.add_argument("--export", default=None, help="write the EMA model directory here at the end")
    t.add_argument("--steps", type=_positive_int, default=10_000)
    t.add_argument("--batch-size", type=_positive_int, default=64)
    t.add_argument("--lr", type=_positive_float, default=2e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--base-channels", type=_positive_int, default=16)
    t.add_argument("--checkpoint-every", type=_positive_int, default=1000)
    t.add_argument("--conditional", action="store_true", help="train a class-conditional model (label dropout 0.1)")

    i = sub.add_parser("info", help="describe a model directory or a schedule JSON file")
    i.add_argument("path")
    return p


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _load(checkpoint, conditional: bool = False):
    from .checkpoint import load_model, load_model_info, pretrained_path

    path = Path(checkpoint) if checkpoint else pretrained_path("digits_cond" if conditional else "digits")
    return path, load_model_info(path), load_model(path)


def _calibrate_with_progress(model, grid, info, nfe, n, seed, tau=None):
    import jax
    from tqdm.auto import tqdm

    from .calibrate import calibrate

    noise = jax.random.normal(jax.random.key(seed), (n, *info.image_shape))
    bar = tqdm(desc=f"calibrating RBE for nfe={nfe}", unit="run", file=sys.stderr, dynamic_ncols=True)

    def progress(r):
        bar.update(1)
        bar.set_postfix(tau=f"{r['tau']:.3g}", mean_nfe=f"{r['mean_nfe']:.2f}", exact=r["exact"])

    try:
        return calibrate(model, grid, noise, nfe, tau=tau, progress=progress)
    finally:
        bar.close()


def _resolve_schedule(args, path, info, model):
    from .schedule import BASELINES, Schedule, baseline_schedule

    grid = info.default_grid
    if args.schedule in BASELINES:
        if args.nfe > grid.K:
            raise CLIError(f"--nfe {args.nfe} exceeds the model's {grid.K}-point grid")
        return baseline_schedule(grid, args.nfe, args.schedule)
    if args.schedule == "rbe":
        if args.nfe >= grid.K:
            raise CLIError(f"--nfe {args.nfe}: an RBE schedule needs nfe < {grid.K} (the grid size)")
        shipped = path / "schedules" / f"rbe_nfe{args.nfe}.json"
        if shipped.is_file() and args.label is None:
            return Schedule.load(shipped, grid)
        why = "for a guided model" if args.label is not None else f"for nfe={args.nfe}"
        _say(f"no shipped RBE schedule {why}: calibrating one now (256 samples; save it with `rbe-jax calibrate`)")
        return _calibrate_with_progress(model, grid, info, args.nfe, 256, 1234)
    f = Path(args.schedule)
    if f.suffix != ".json":
        raise CLIError(f"--schedule must be one of {', '.join(SCHEDULE_KINDS)} or a .json file, got {args.schedule!r}")
    sched = Schedule.load(f, grid)
    if sched.nfe != args.nfe:
        _say(f"note: {f} has {sched.nfe} steps; using them (--nfe {args.nfe} ignored)")
    return sched


def _conditioned(model, info, label, guidance):
    """The model to sample: as is, or wrapped in classifier-free guidance for a label."""
    from .models import ClassifierFreeGuidance

    num_classes = info.config.num_classes
    if label is None:
        if guidance:
            raise CLIError("--guidance needs --label")
        return model
    if num_classes == 0:
        raise CLIError("--label needs a class-conditional model (this checkpoint has num_classes=0)")
    if not 0 <= label < num_classes:
        raise CLIError(f"--label must be in [0, {num_classes - 1}], got {label}")
    return ClassifierFreeGuidance(model=model, label=label, scale=float(guidance), null_label=num_classes)


def save_grid_png(images, out, scale: int = 2) -> None:
    """Writes ``images`` ``(N, H, W, C)`` in ``[-1, 1]`` as one PNG grid."""
    import numpy as np
    from PIL import Image

    x = np.clip((np.asarray(images, np.float32) + 1.0) * 127.5, 0, 255).astype(np.uint8)
    n, h, w, c = x.shape
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    canvas = np.full((rows * (h + 1) + 1, cols * (w + 1) + 1, c), 64, np.uint8)
    for k in range(n):
        r, q = divmod(k, cols)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = x[k]
    img = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    img.save(out)


def cmd_sample(args) -> int:
    import jax
    import numpy as np

    from .sampler import rbe_sample
    from .solvers import get_solver

    t0 = time.perf_counter()
    path, info, model = _load(args.checkpoint, conditional=args.label is not None)
    model = _conditioned(model, info, args.label, args.guidance)
    sched = _resolve_schedule(args, path, info, model)
    if args.out_dir:
        from .sample_job import sample_job

        m = sample_job(
            model, sched, args.n, args.batch, args.out_dir, image_shape=info.image_shape, seed=args.seed,
            solver=args.solver, model_id=f"{path} label={args.label} guidance={args.guidance}",
        )
        print(f"{args.out_dir}: {sum(v['count'] for v in m['shards'].values())}/{args.n} samples in {len(m['shards'])} shards ({time.perf_counter() - t0:.1f}s)")
        return 0
    noise = jax.random.normal(jax.random.key(args.seed), (args.n, *info.image_shape))
    x = jax.jit(rbe_sample)(model, noise, sched, get_solver(args.solver))
    x = np.asarray(jax.block_until_ready(x))
    if not np.all(np.isfinite(x)):
        raise CLIError("the model produced NaN/Inf samples")
    save_grid_png(x, args.out)
    if args.npz:
        np.savez(args.npz, samples=x, indices=np.asarray(sched.indices), timesteps=np.asarray(sched.timesteps), alpha_bar=np.asarray(sched.alpha_bar))
    print(
        f"wrote {args.out}: {args.n} samples, {sched.method} schedule, nfe={sched.nfe}, solver={args.solver}, "
        f"indices={np.asarray(sched.indices).tolist()} ({time.perf_counter() - t0:.1f}s)"
    )
    return 0


def cmd_calibrate(args) -> int:
    path, info, model = _load(args.checkpoint)
    grid = info.default_grid
    if args.nfe >= grid.K:
        raise CLIError(f"--nfe {args.nfe}: an RBE schedule needs nfe < {grid.K} (the grid size)")
    sched = _calibrate_with_progress(model, grid, info, args.nfe, args.n, args.seed, tau=args.tau)
    sched.save(args.out)
    i = sched.info
    print(
        f"wrote {args.out}: nfe={sched.nfe}, tau={sched.tau:.4g}, indices={list(map(int, sched.indices))}, "
        f"{i['samples_used']}/{i['batch']} samples ({i['aggregation']}), {i['search_runs']} search runs + 1 full run, "
        f"{i['calibration_evals']} batched forward+VJP passes"
    )
    return 0


def cmd_train(args) -> int:
    from flax import nnx

    from .checkpoint import save_model
    from .data import load_digits
    from .nets.unet import UNet, UNetConfig
    from .train import TrainConfig, train

    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, checkpoint_every=args.checkpoint_every)
    ucfg = UNetConfig(base_channels=args.base_channels, num_classes=10 if args.conditional else 0)
    images, labels = load_digits(ucfg.image_size)
    graphdef, state, losses = train(UNet(ucfg, nnx.Rngs(args.seed)), images, cfg, args.workdir, labels=labels if args.conditional else None)
    if losses:
        print(f"trained to step {int(state.step)}; mean loss of the last {min(len(losses), 500)} steps: {sum(losses[-500:]) / len(losses[-500:]):.4f}")
    if args.export:
        model = nnx.merge(graphdef, state.ema)
        spec = dict(kind="linear", T=cfg.num_train_timesteps, beta_start=cfg.beta_start, beta_end=cfg.beta_end)
        data = "sklearn digits 16x16" + (", class-conditional (label dropout 0.1)" if args.conditional else "")
        meta = dict(trained_steps=int(state.step), train_config=cfg.to_dict(), data=data, weights="EMA", grid_K=100)
        save_model(args.export, model, noise_schedule_spec=spec, meta=meta, overwrite=True)
        print(f"exported the EMA model to {args.export}")
    return 0


def cmd_info(args) -> int:
    from .checkpoint import load_model_info
    from .schedule import Schedule

    p = Path(args.path)
    if p.is_dir():
        info = load_model_info(p)
        out = dict(
            kind="model",
            path=str(p),
            architecture=info.architecture,
            config=info.config.to_dict(),
            noise_schedule=info.noise_schedule_spec,
            image_shape=list(info.image_shape),
            param_count=info.param_count,
            meta=info.meta,
        )
        sched_dir = p / "schedules"
        if sched_dir.is_dir():
            out["schedules"] = sorted(f.name for f in sched_dir.glob("*.json"))
    elif p.is_file():
        s = Schedule.load(p)
        out = dict(kind="schedule", path=str(p), **s.to_dict())
    else:
        raise FileNotFoundError(f"no such file or directory: {p}")
    print(json.dumps(out, indent=1))
    return 0


COMMANDS = {"sample": cmd_sample, "calibrate": cmd_calibrate, "train": cmd_train, "info": cmd_info}


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except CLIError as e:
        msg = str(e)
        print(msg if msg.startswith("rbe-jax") else f"rbe-jax: error: {msg}", file=sys.stderr)
        return 2
    except (FileNotFoundError, FileExistsError, ValueError, TypeError, FloatingPointError, ImportError) as e:
        print(f"rbe-jax: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rbe-jax: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
