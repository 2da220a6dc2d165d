"""The ``rbe-jax`` console script: sample, calibrate, train, info.

    rbe-jax sample --nfe 10 --out samples.png
    rbe-jax calibrate --nfe 12 --out schedule.json
    rbe-jax train --workdir runs/digits --export my_model
    rbe-jax info digits | PATH

Every output path is checked before any model call, and outputs are written under
temporary names and renamed only once everything succeeded: a failed run leaves existing
files untouched.  Errors are one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import time
from pathlib import Path

__all__ = ["main"]

SCHEDULE_KINDS = ("auto", "rbe", "learned", "optimized", "uniform", "quadratic", "logsnr", "karras", "shift")
SOLVER_NAMES = ("ddim", "dpmpp2m", "dpmpp3m", "unipc")  # rbe_jax.core.solvers.SOLVERS, without importing jax
RULE_NAMES = ("backward_error", "local_error")  # rbe_jax.rbe.calibration.RULES


class CLIError(Exception):
    """An error to report as one line, without a traceback."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        raise CLIError(f"{self.prog}: error: {message} (see --help)")


def _seed(text: str) -> int:
    """A PRNG seed: an integer that fits ``jax.random.key`` (0 <= seed < 2**63)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= v < 2**63:
        raise argparse.ArgumentTypeError(f"must satisfy 0 <= seed < 2**63, got {v}")
    return v


def _number(kind: type, lowest: float, strict: bool):
    """An argparse ``type``: a finite ``kind`` above ``lowest`` (``strict``) or at least it."""
    what = "an integer" if kind is int else "a number"
    bound = f"{'>' if strict else '>='} {lowest:g}"

    def parse(s: str):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}") from None
        if not (math.isfinite(v) and (v > lowest if strict else v >= lowest)):
            raise argparse.ArgumentTypeError(f"must be {'' if kind is int else 'a finite number '}{bound}, got {s}")
        return v

    return parse


_positive_int = _number(int, 1, strict=False)
_guidance_weight = _number(float, 0.0, strict=False)
_positive_float = _number(float, 0.0, strict=True)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = _Parser(prog="rbe-jax", description="Fast diffusion sampling with the RBE schedule (JAX/Flax).")
    p.add_argument("--version", action="version", version=f"rbe-jax {__version__}")
    sub = p.add_subparsers(dest="command", metavar="{sample,calibrate,train,info}", parser_class=_Parser)
    sub.required = True

    s = sub.add_parser("sample", help="sample images from a model on a fixed schedule")
    s.add_argument("--nfe", type=_positive_int, default=10, help="network evaluations (default 10; baselines up to the training length)")
    s.add_argument("--solver", choices=SOLVER_NAMES, default="unipc", help="default unipc (ddim: the faithful RBE sampler)")
    s.add_argument(
        "--schedule", default="auto",
        help=f"{' | '.join(SCHEDULE_KINDS)} | FILE.json (default auto: the model's shipped schedule optimized for --nfe and --solver (and --guidance) if there is one, else rbe)",
    )
    s.add_argument("--n", type=_positive_int, default=64, help="number of samples (default 64)")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--out", default="samples.png", help="image grid to write, .png or .jpg (default samples.png)")
    s.add_argument("--npz", default=None, help="also write the raw samples and the schedule here (.npz)")
    s.add_argument("--checkpoint", default=None, help="model directory or shipped model name: digits, digits_cond, digits_flow (default: digits; with --label, digits_cond)")
    s.add_argument("--out-dir", default=None, help="sampling job: write numbered .npz shards and a manifest here (resumable)")
    s.add_argument("--batch", type=_positive_int, default=512, help="samples per shard with --out-dir (default 512)")
    s.add_argument("--label", type=int, default=None, help="class label (class-conditional models)")
    s.add_argument("--guidance", type=_guidance_weight, default=0.0, help="classifier-free guidance weight w >= 0 (default 0)")

    c = sub.add_parser("calibrate", help="calibrate a schedule of exactly --nfe steps (RBE, or optimized for a solver)")
    c.add_argument("--nfe", type=_positive_int, required=True)
    c.add_argument(
        "--method", choices=("rbe", "learned", "optimized"), default="rbe",
        help="rbe: the RBE rule (default); learned: times learned by gradient for --solver (the recommended tuned schedule); optimized: coordinate moves on the training grid for --solver",
    )
    c.add_argument("--solver", choices=SOLVER_NAMES, default="unipc", help="the solver a learned or optimized schedule is made for (default unipc)")
    c.add_argument("--steps", type=_positive_int, default=100, help="--method learned: optimisation steps (default 100)")
    c.add_argument("--coefficients", action="store_true", help="--method learned --solver dpmpp2m: also learn the solver's per-step coefficients (stored with the schedule; `sample` uses them)")
    c.add_argument("--teacher-steps", type=_positive_int, default=250, help="--method learned: steps of the accurate solve it matches (default 250)")
    c.add_argument("--out", required=True, help="schedule JSON to write")
    c.add_argument("--checkpoint", default=None, help="model directory or shipped model name: digits, digits_cond, digits_flow (default: digits; with --label, digits_cond)")
    c.add_argument("--n", type=_positive_int, default=256, help="calibration samples (default 256)")
    c.add_argument("--seed", type=_seed, default=1234, help="seed of the calibration noise")
    c.add_argument("--tau", type=_positive_float, default=None, help="fixed threshold (default: searched)")
    c.add_argument(
        "--rule",
        choices=RULE_NAMES,
        default="backward_error",
        help="--method rbe's step rule: backward_error (the seed's, default) or local_error (bounds a second-order solver's local error)",
    )
    c.add_argument("--label", type=int, default=None, help="class label (class-conditional models)")
    c.add_argument("--guidance", type=_guidance_weight, default=0.0, help="classifier-free guidance weight w >= 0 (default 0)")

    t = sub.add_parser("train", help="train a U-Net on the digits data set (needs the train extra)")
    t.add_argument("--workdir", required=True, help="checkpoint directory; an interrupted run resumes from it")
    t.add_argument("--export", default=None, help="write the EMA model directory here at the end")
    t.add_argument("--steps", type=_positive_int, default=10_000)
    t.add_argument("--batch-size", type=_positive_int, default=64)
    t.add_argument("--lr", type=_positive_float, default=2e-3)
    t.add_argument("--seed", type=_seed, default=0)
    t.add_argument("--base-channels", type=_positive_int, default=16)
    t.add_argument("--checkpoint-every", type=_positive_int, default=1000)
    t.add_argument("--conditional", action="store_true", help="train a class-conditional model (label dropout 0.1)")
    t.add_argument("--objective", choices=("eps", "flow"), default="eps", help="eps: DDPM noise prediction (default); flow: rectified flow, velocity prediction")

    i = sub.add_parser("info", help="describe a shipped model (digits, digits_cond), a model directory or a schedule file")
    i.add_argument("path", help="a shipped model's name, a model directory or a schedule .json")
    return p


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _model_path(arg: str) -> Path:
    """A model directory, or the name of a shipped model (an existing path wins)."""
    from ..zoo.checkpoint import PRETRAINED, pretrained_path

    p = Path(arg)
    return pretrained_path(arg) if not p.exists() and arg in PRETRAINED else p


def _load(checkpoint, label=None, guidance: float = 0.0):
    """``(model directory, its ModelInfo, the model ready to sample)``: the network restored,
    wrapped with classifier-free guidance for a label, in the internal form."""
    from ..zoo.checkpoint import load_denoiser, load_model_info, pretrained_path

    path = _model_path(checkpoint) if checkpoint else pretrained_path("digits_cond" if label is not None else "digits")
    info = load_model_info(path)
    num_classes = info.config.num_classes
    if label is None and guidance:
        raise CLIError("--guidance needs --label")
    if label is not None:
        if num_classes == 0:
            raise CLIError("--label needs a class-conditional model (this checkpoint has num_classes=0)")
        if not 0 <= label < num_classes:
            raise CLIError(f"--label must be in [0, {num_classes - 1}], got {label}")
    return path, info, load_denoiser(path, label=label, guidance=guidance)


def _calibrate(model, grid, info, nfe, n, seed, tau=None, rule="backward_error"):
    import jax

    from ..rbe.calibration import calibrate

    noise = jax.random.normal(jax.random.key(seed), (n, *info.image_shape))
    return calibrate(model, grid, noise, nfe, tau=tau, rule=rule, progress=True)


def _load_schedule(f: Path, info):
    from ..zoo.shipped import load_model_schedule

    return load_model_schedule(f, info)


def _resolve_schedule(args, path, info, model):
    """The schedule ``--schedule`` names: a fixed spacing, a file, or a shipped one through
    :func:`rbe_jax.pretrained_schedule` (``auto``: learned > optimized > RBE); an RBE
    schedule that is not shipped is calibrated (and, for a label, cached)."""
    from ..core.schedule import BASELINES, baseline_schedule
    from ..zoo.shipped import SHIPPED_KINDS, pretrained_schedule

    kind = args.schedule
    if kind in BASELINES:
        try:
            return baseline_schedule(info.noise_schedule, args.nfe, kind)
        except ValueError as e:
            raise CLIError(f"--schedule {kind}: {e}") from None
    if kind != "auto" and kind not in SHIPPED_KINDS:
        return _schedule_file(args, info)
    w = None if args.label is None else args.guidance  # shipped per guidance weight, for any label
    try:
        shipped = pretrained_schedule(info, args.nfe, args.solver, w, kind=kind)
    except FileNotFoundError:
        shipped = None
    if shipped is not None and shipped.method != "rbe":
        return shipped
    if kind in ("learned", "optimized"):
        cond = "" if args.label is None else f" and guidance {args.guidance:g}"
        make = "" if args.label is None else f" --label {args.label} --guidance {args.guidance:g}"
        raise CLIError(
            f"no shipped {kind} schedule for nfe={args.nfe}, solver {args.solver}{cond}: make one with "
            f"`rbe-jax calibrate --method {kind} --solver {args.solver} --nfe {args.nfe}{make} --out FILE.json` and pass --schedule FILE.json"
        )
    return _rbe_schedule(args, path, info, model, shipped)


def _rbe_schedule(args, path, info, model, shipped):
    """An RBE schedule for ``--nfe``: for a label one calibrated for it earlier (cached), else
    the ``shipped`` one, else one calibrated now."""
    from .cache import cached_schedule_path

    grid = info.default_grid
    if args.nfe >= grid.K:
        raise CLIError(f"--nfe {args.nfe}: an RBE schedule needs nfe < {grid.K} (the grid size); use --schedule uniform for reference runs")
    cached = None if args.label is None else cached_schedule_path(path, f"rbe_nfe{args.nfe}_label{args.label}_w{args.guidance:g}_{args.solver}.json")
    if cached is not None and cached.is_file():  # calibrated for this label: wins over the label-agnostic shipped one
        return _load_schedule(cached, info)
    if shipped is not None:
        return shipped
    if cached is None:
        _say(f"no shipped RBE schedule for nfe={args.nfe}: calibrating one now (256 samples; `rbe-jax calibrate --nfe {args.nfe} --out FILE` saves one)")
        return _calibrate(model, grid, info, args.nfe, 256, 1234)
    _say(f"no RBE schedule yet for label {args.label}, guidance {args.guidance:g}, nfe={args.nfe}: calibrating one now (256 samples); cached at {cached}")
    sched = _calibrate(model, grid, info, args.nfe, 256, 1234)
    sched.save(cached)
    return sched


def _schedule_file(args, info):
    f = Path(args.schedule)
    if f.suffix != ".json":
        raise CLIError(f"--schedule must be one of {', '.join(SCHEDULE_KINDS)} or a .json file, got {args.schedule!r}")
    sched = _load_schedule(f, info)
    if sched.nfe != args.nfe:
        _say(f"note: {f} has {sched.nfe} steps; using them (--nfe {args.nfe} ignored)")
    return sched


def _check_output(path, option: str, suffixes: tuple[str, ...]) -> Path:
    """Validates an output path before any work: a known suffix, not a directory, and a
    writable nearest existing ancestor (missing parent directories are created on write)."""
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise CLIError(f"{option} {path}: the file name must end in {' or '.join(suffixes)}")
    if p.is_dir():
        raise CLIError(f"{option} {path}: is a directory")
    _check_parent(p, option)
    return p


def _check_parent(path: Path, option: str) -> None:
    """The nearest existing ancestor of ``path`` is a directory that a file can be written in
    (missing parent directories are created on write)."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CLIError(f"{option} {path}: {parent} is not a directory")
    _probe(parent, option, path)


def _probe(directory: Path, option: str, path) -> None:
    """A real write in ``directory`` before any model call (see ``probe_writable``)."""
    from ..core._io import probe_writable

    try:
        probe_writable(directory)
    except OSError as e:
        raise CLIError(f"{option} {path}: {e}") from None


def _check_out_dir(path) -> Path:
    """``--out-dir``: a directory (made now, with its parents) that a file can be written in."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise CLIError(f"--out-dir {path}: is a file")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"--out-dir {path}: cannot be created: {e.strerror or e}") from None
    _probe(p, "--out-dir", path)
    return p


def _check_export(path) -> Path:
    """``train --export``: refused before training if it is an existing directory that is not
    an exported model, or if its parent cannot be written."""
    from ..zoo.checkpoint import check_replaceable

    p = Path(path)
    try:
        check_replaceable(p)
    except FileExistsError as e:
        raise CLIError(f"--export: {e}") from None
    _check_parent(p, "--export")
    return p


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def grid_image_bytes(images, suffix: str = ".png", scale: int = 2) -> bytes:
    """``images`` ``(N, H, W, C)`` in ``[-1, 1]`` as one image grid, encoded for ``suffix``
    (``.png``, ``.jpg``)."""
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
    buf = io.BytesIO()
    img.save(buf, format="PNG" if suffix.lower() == ".png" else "JPEG")
    return buf.getvalue()


def save_grid_png(images, out, scale: int = 2) -> None:
    """Writes ``images`` ``(N, H, W, C)`` in ``[-1, 1]`` as one image grid (atomically)."""
    from ..core._io import atomic_write

    atomic_write(out, grid_image_bytes(images, Path(out).suffix, scale))


def _batch_sharding(n: int):
    """Split a batch over every local device when it divides evenly (a TPU host's cores)."""
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.local_devices()
    if len(devices) < 2 or n % len(devices):
        return None
    return NamedSharding(Mesh(np.asarray(devices), ("batch",)), PartitionSpec("batch"))


def _times(sched) -> str:
    """The schedule's model times, short."""
    return "[" + ", ".join(f"{t:.4g}" for t in sched.model_times) + "]"


def cmd_sample(args) -> int:
    import jax
    import numpy as np

    from ..core._io import atomic_write_all, npz_bytes
    from ..core.sampler import rbe_sample

    t0 = time.perf_counter()
    if args.out_dir:
        _check_out_dir(args.out_dir)
    else:
        out = _check_output(args.out, "--out", IMAGE_SUFFIXES)
        npz = _check_output(args.npz, "--npz", (".npz",)) if args.npz else None
        if npz is not None and npz.absolute() == out.absolute():
            raise CLIError("--out and --npz name the same file")
    path, info, model = _load(args.checkpoint, args.label, args.guidance)
    sched = _resolve_schedule(args, path, info, model)
    solver = args.solver
    if sched.info.get("coefficients"):
        from ..core.solvers import learned_solver

        if args.solver != "dpmpp2m":
            _say(f"note: this schedule carries learned DPM-Solver++(2M) coefficients: sampling with them (--solver {args.solver} ignored)")
        solver = learned_solver(sched)
    if args.out_dir:
        from .jobs import sample_job

        written = []
        m = sample_job(
            model, sched, args.n, args.batch, args.out_dir, image_shape=info.image_shape, seed=args.seed,
            solver=solver, sharding=_batch_sharding(args.batch), on_shard=written.append, progress=True,
            model_id=f"{path} label={args.label} guidance={args.guidance}",
        )
        done = sum(v["count"] for v in m["shards"].values())
        print(
            f"{args.out_dir}: {done}/{args.n} samples in {len(m['shards'])}/{m['num_shards']} shards; "
            f"{len(written)} computed now, {len(m['shards']) - len(written)} already done and checked ({time.perf_counter() - t0:.1f}s)"
        )
        return 0
    noise = jax.random.normal(jax.random.key(args.seed), (args.n, *info.image_shape))
    sharding = _batch_sharding(args.n)
    if sharding is not None:
        noise = jax.device_put(noise, sharding)
    x = np.asarray(rbe_sample(model, noise, sched, solver, check_finite=True))
    files = {out: grid_image_bytes(x, out.suffix)}
    if npz is not None:
        files[npz] = npz_bytes(samples=x, log_snr=np.asarray(sched.lam, np.float64), model_times=sched.model_times, alpha_bar=sched.alpha_bar)
    atomic_write_all(files)
    print(
        f"wrote {', '.join(map(str, files))}: {args.n} samples, {sched.method} schedule, nfe={sched.nfe}, solver={getattr(solver, 'name', solver)}, "
        f"model times={_times(sched)} ({time.perf_counter() - t0:.1f}s)"
    )
    return 0


def cmd_calibrate(args) -> int:
    import jax

    out = _check_output(args.out, "--out", (".json",))
    path, info, model = _load(args.checkpoint, args.label, args.guidance)
    if args.method != "rbe" and (args.tau is not None or args.rule != "backward_error"):
        raise CLIError("--tau and --rule apply to --method rbe only")
    if args.coefficients and (args.method != "learned" or args.solver != "dpmpp2m"):
        raise CLIError("--coefficients learns DPM-Solver++(2M)'s coefficients: use it with --method learned --solver dpmpp2m")
    if args.method != "rbe":
        grid = info.noise_schedule  # every training step is a candidate point
        if args.nfe > grid.K:
            raise CLIError(f"--nfe {args.nfe} exceeds the model's {grid.K} training steps")
        noise = jax.random.normal(jax.random.key(args.seed), (args.n, *info.image_shape))
        if args.method == "learned":
            from ..tuning.learn import learn_schedule
            from ..tuning.teacher import make_teacher

            if args.teacher_steps > grid.K:
                raise CLIError(f"--teacher-steps {args.teacher_steps} exceeds the model's {grid.K} training steps")
            if args.n < 8:
                raise CLIError(f"--n {args.n}: --method learned needs at least 8 calibration samples (a quarter is held out)")
            _say(f"solving {args.n} calibration samples accurately ({args.teacher_steps} steps) ...")
            teacher = make_teacher(model, grid, noise, args.teacher_steps)
            sched = learn_schedule(model, grid, teacher, args.nfe, args.solver, steps=args.steps, coefficients=args.coefficients, progress=True)
            i = sched.info
            h = i["held_out"]
            what = "learned" if i["selected"] == "learned" else f"{i['selected']} (the guard: {i['guard']})"
            print(
                f"wrote {sched.save(out)}: {what} for {args.solver}, nfe={sched.nfe}, model times={_times(sched)}; on {i['held_out_samples']} held-out samples "
                f"RMSE {h['rmse']:.4g}, median {h['median']:.4g} (best fixed start {i['start']}: RMSE {i['candidates'][i['start']]['rmse']:.4g}, "
                f"median {i['candidates'][i['start']]['median']:.4g}); {i['model_evals'] + i['teacher_evals']} model evaluations, {i['seconds'] + i['teacher_seconds']:.0f}s"
            )
            return 0
        from ..tuning.optimize import optimize_schedule

        sched = optimize_schedule(model, grid, noise, args.nfe, args.solver, progress=True)
        sched.save(out)
        i = sched.info
        print(
            f"wrote {out}: optimized for {args.solver}, nfe={sched.nfe}, model times={_times(sched)}, "
            f"RMSE to a {i['reference_steps']}-step solve on the best {1 - i['trim']:.0%} of {i['batch']} fitted samples {i['rmse']:.4g} "
            f"(best start: {i['start']}, {i['start_rmse']:.4g}); selected: {i['selected']}, held-out RMSE {i['held_out']['rmse']:.4g}; "
            f"{i['model_evals']} model evaluations, {i['seconds']:.0f}s"
        )
        return 0
    grid = info.default_grid
    if args.nfe >= grid.K:
        raise CLIError(f"--nfe {args.nfe}: an RBE schedule needs nfe < {grid.K} (the grid size)")
    sched = _calibrate(model, grid, info, args.nfe, args.n, args.seed, tau=args.tau, rule=args.rule)
    sched.save(out)
    i = sched.info
    passes = "forward+VJP" if args.rule == "backward_error" else "forward"
    print(
        f"wrote {out}: nfe={sched.nfe}, rule={args.rule}, tau={sched.tau:.4g}, indices={list(map(int, sched.indices))}, "
        f"{i['samples_used']}/{i['batch']} samples ({i['aggregation']}), {i['search_runs']} search runs + 1 full run, "
        f"{i['calibration_evals']} batched {passes} passes"
    )
    return 0


def cmd_train(args) -> int:
    from flax import nnx

    from ..zoo.checkpoint import save_model
    from ..zoo.data import load_digits
    from ..zoo.nets.unet import UNet, UNetConfig
    from ..zoo.train import TrainConfig, train

    if args.export:
        _check_export(args.export)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, checkpoint_every=args.checkpoint_every, objective=args.objective)
    ucfg = UNetConfig(base_channels=args.base_channels, num_classes=10 if args.conditional else 0)
    images, labels = load_digits(ucfg.image_size)
    graphdef, state, losses = train(UNet(ucfg, nnx.Rngs(args.seed)), images, cfg, args.workdir, labels=labels if args.conditional else None, progress=True)
    if losses:
        print(f"trained to step {int(state.step)}; mean loss of the last {min(len(losses), 500)} steps: {sum(losses[-500:]) / len(losses[-500:]):.4f}")
    if args.export:
        model = nnx.merge(graphdef, state.ema)
        data = "sklearn digits 16x16" + (", class-conditional (label dropout 0.1)" if args.conditional else "")
        data += ", rectified flow" if args.objective == "flow" else ""
        meta = dict(trained_steps=int(state.step), train_config=cfg.to_dict(), data=data, weights="EMA", grid_K=100)
        save_model(args.export, model, noise_schedule_spec=cfg.noise_schedule_spec(), prediction=cfg.prediction, meta=meta, overwrite=True)
        print(f"exported the EMA model to {args.export}")
    return 0


def cmd_info(args) -> int:
    from ..zoo.checkpoint import PRETRAINED, load_model_info
    from ..core.schedule import Schedule

    p = _model_path(args.path)
    if p.is_dir():
        info = load_model_info(p)
        out = dict(
            kind="model",
            path=str(p.absolute()),
            architecture=info.architecture,
            config=info.config.to_dict(),
            noise_schedule=info.noise_schedule_spec,
            prediction=info.prediction,
            image_shape=list(info.image_shape),
            param_count=info.param_count,
            meta=info.meta,
        )
        sched_dir = p / "schedules"
        if sched_dir.is_dir():
            out["schedules"] = sorted(f.name for f in sched_dir.glob("*.json"))
    elif p.is_file():
        s = Schedule.load(p)
        out = dict(kind="schedule", path=str(p.absolute()), **s.to_dict())
    else:
        raise FileNotFoundError(f"no such file or directory: {p} (shipped models: {', '.join(PRETRAINED)})")
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
    except (OSError, ValueError, TypeError, FloatingPointError, ImportError, RuntimeError) as e:
        print(f"rbe-jax: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rbe-jax: interrupted", file=sys.stderr)
        return 130


def console_main() -> None:
    """The ``rbe-jax`` console script: :func:`main`, then exit.  After an interrupt it
    flushes its output and leaves with ``os._exit(130)``: a regular exit would finalize the
    interpreter while XLA's threads may still run the interrupted computation, which can
    end in a segmentation fault instead of status 130."""
    rc = main()
    if rc == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(rc)


if __name__ == "__main__":
    console_main()
