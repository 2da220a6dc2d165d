"""Training a diffusion model with optax: AdamW, warm-up + cosine decay, gradient clipping,
an EMA of the parameters, a jit-compiled step, Orbax checkpoints, and exact resume.

Two objectives: ``"eps"`` (DDPM: the noise at a uniform random timestep of a linear-beta
table) and ``"flow"`` (rectified flow: the velocity ``eps - x0`` of ``x_t = (1 - t) x0 + t
eps`` at ``t ~ U(0, 1)``, the network fed ``flow_time_scale * t`` as SD3 feeds it).

The model is an NNX module; training is functional over its ``nnx.split`` state, so the
whole :class:`TrainState` is a pytree of arrays that Orbax saves and restores as is.  Each
step's randomness is ``fold_in(seed_key, step)``: a resumed run repeats exactly the steps
an uninterrupted run would take.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ..core._io import read_json, write_json
from ..core.noise import NoiseSchedule

__all__ = ["TrainConfig", "TrainState", "make_optimizer", "make_train_step", "init_state", "train", "OBJECTIVES"]

OBJECTIVES = {"eps": "eps", "flow": "velocity"}  # objective -> the network's prediction


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train` (JSON-serialisable)."""

    steps: int = 10_000
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 500
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_train_timesteps: int = 1000
    label_dropout: float = 0.1  # class-conditional models only: share of labels replaced by "no label"
    objective: str = "eps"  # "eps" (DDPM) or "flow" (rectified flow, velocity prediction)
    flow_time_scale: float = 1000.0  # "flow": the network is fed this times t

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def noise_schedule_spec(self) -> dict:
        """The model config's ``noise_schedule`` entry (see :class:`rbe_jax.NoiseSchedule`'s
        ``origin``)."""
        if self.objective == "flow":
            return {"kind": "flow", "time_scale": float(self.flow_time_scale), "t_min": 1e-3, "N": int(self.num_train_timesteps)}
        return {"kind": "linear", "T": int(self.num_train_timesteps), "beta_start": float(self.beta_start), "beta_end": float(self.beta_end)}

    @property
    def prediction(self) -> str:
        """What the trained network outputs."""
        return OBJECTIVES[self.objective]

    def noise_schedule(self) -> NoiseSchedule:
        from ..core.noise import noise_schedule_from_origin

        return noise_schedule_from_origin(self.noise_schedule_spec())


class TrainState(NamedTuple):
    """Everything a resumed run needs: a pytree of arrays."""

    step: jax.Array
    params: Any
    ema: Any
    opt_state: Any


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """Gradient clipping, then AdamW with linear warm-up and cosine decay."""
    lr = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, cfg.warmup_steps, max(cfg.steps, cfg.warmup_steps + 1), cfg.lr * 0.05)
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optax.adamw(lr, weight_decay=cfg.weight_decay))


def init_state(model: nnx.Module, cfg: TrainConfig) -> tuple[nnx.GraphDef, TrainState]:
    graphdef, params = nnx.split(model, nnx.Param)
    opt = make_optimizer(cfg)
    return graphdef, TrainState(
        step=jnp.zeros((), jnp.int32), params=params, ema=jax.tree_util.tree_map(jnp.copy, params), opt_state=opt.init(params)
    )


def make_train_step(graphdef, cfg: TrainConfig, data: jax.Array, labels: jax.Array | None = None, num_classes: int = 0) -> Callable[[TrainState], tuple[TrainState, jax.Array]]:
    """The training step (the objective's MSE, see the module docstring).

    Args:
      graphdef: the model's ``nnx.split`` graph definition.
      cfg: the hyper-parameters.
      data: ``(N, H, W, C)`` training images in ``[-1, 1]`` (kept on the device).
      labels: ``(N,)`` int labels, for a class-conditional model (``num_classes > 0``);
        a ``cfg.label_dropout`` share of them is replaced by the "no label" class.
    Returns:
      ``step(state) -> (state, loss)``: one module-level jitted function with the data as
      arguments, so a resumed run (or a second model of the same structure and config)
      reuses its compilation.
    """
    if num_classes > 0 and labels is None:
        raise ValueError("a class-conditional model needs labels")
    data = jnp.asarray(data)
    labels = None if labels is None else jnp.asarray(labels)
    return functools.partial(_train_step, data=data, labels=labels, graphdef=graphdef, cfg=cfg, num_classes=num_classes)


def _loss(graphdef, cfg: TrainConfig, params, x0, u, noise, y) -> jax.Array:
    """The objective's MSE for timesteps (or flow times) ``u`` and labels ``y`` (or None)."""
    model = nnx.merge(graphdef, params)
    if cfg.objective == "flow":  # u ~ U(0, 1): x_t = (1 - t) x0 + t eps, target eps - x0
        t = u[:, None, None, None]
        xt, target, t_in = (1.0 - t) * x0 + t * noise, noise - x0, cfg.flow_time_scale * u
    else:  # u: integer timesteps of the table
        a = jnp.asarray(cfg.noise_schedule().alpha_bar, jnp.float32)[u][:, None, None, None]
        xt, target, t_in = jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * noise, noise, u
    out = model(xt, t_in) if y is None else model(xt, t_in, y)
    return jnp.mean(jnp.square(out - target))


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg", "num_classes"))
def _train_step(state: TrainState, *, data, labels, graphdef, cfg: TrainConfig, num_classes: int) -> tuple[TrainState, jax.Array]:
    k_idx, k_t, k_n, k_drop = jax.random.split(jax.random.fold_in(jax.random.key(cfg.seed), state.step), 4)
    idx = jax.random.randint(k_idx, (cfg.batch_size,), 0, data.shape[0])
    x0 = data[idx]
    if cfg.objective == "flow":
        t = jax.random.uniform(k_t, (cfg.batch_size,))
    else:
        t = jax.random.randint(k_t, (cfg.batch_size,), 0, cfg.num_train_timesteps)
    noise = jax.random.normal(k_n, x0.shape, x0.dtype)
    y = None
    if num_classes > 0:
        drop = jax.random.uniform(k_drop, (cfg.batch_size,)) < cfg.label_dropout
        y = jnp.where(drop, num_classes, labels[idx])
    loss, grads = jax.value_and_grad(lambda p: _loss(graphdef, cfg, p, x0, t, noise, y))(state.params)
    updates, opt_state = make_optimizer(cfg).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    d = jnp.minimum(cfg.ema_decay, (1.0 + state.step) / (10.0 + state.step))  # EMA warm-up
    ema = jax.tree_util.tree_map(lambda e, p: d * e + (1.0 - d) * p, state.ema, params)
    return TrainState(state.step + 1, params, ema, opt_state), loss


def train(
    model: nnx.Module,
    data,
    cfg: TrainConfig,
    workdir,
    *,
    labels=None,
    progress: bool = False,
    stop_after: int | None = None,
) -> tuple[nnx.GraphDef, TrainState, list[float]]:
    """Trains ``model`` on ``data``, checkpointing to ``workdir`` and resuming from it.

    Args:
      model: a freshly initialised NNX model (its structure; its weights are replaced on
        resume by the latest checkpoint in ``workdir``).
      data: ``(N, H, W, C)`` images in ``[-1, 1]``.
      cfg: :class:`TrainConfig`.
      labels: ``(N,)`` int labels, required when ``model.config.num_classes > 0``.
      workdir: Orbax ``CheckpointManager`` directory (created; ``train_config.json`` beside).
      progress: show a tqdm bar with the loss.
      stop_after: stop after this many steps of THIS call (to simulate an interruption).
    Returns:
      ``(graphdef, state, losses)`` with the losses of the steps run in this call.
    """
    import orbax.checkpoint as ocp

    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = workdir / "train_config.json"
    if cfg_path.exists():
        saved = TrainConfig.from_dict(read_json(cfg_path, ValueError))
        if saved != cfg:
            raise ValueError(f"{workdir} holds a run with another config: {saved} (delete it or use the same config)")
    else:
        write_json(cfg_path, cfg.to_dict())
    graphdef, state = init_state(model, cfg)
    mngr = ocp.CheckpointManager(
        workdir / "checkpoints",
        options=ocp.CheckpointManagerOptions(max_to_keep=cfg.keep_checkpoints, save_interval_steps=1),
    )
    latest = mngr.latest_step()
    if latest is not None:
        state = mngr.restore(latest, args=ocp.args.StandardRestore(state))
    num_classes = int(getattr(getattr(model, "config", None), "num_classes", 0))
    step_fn = make_train_step(graphdef, cfg, jnp.asarray(data), None if labels is None else jnp.asarray(labels), num_classes)
    start = int(state.step)
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    losses: list[float] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="train", dynamic_ncols=True)
    pending = []
    for s in range(start, end):
        state, loss = step_fn(state)
        pending.append(loss)
        done = s + 1
        if done % 50 == 0 or done == end:
            vals = [float(v) for v in jax.device_get(pending)]
            losses += vals
            pending = []
            if bar is not None:
                bar.update(len(vals))
                bar.set_postfix(loss=f"{np.mean(vals):.4f}")
        if done % cfg.checkpoint_every == 0 or done == end:
            mngr.save(done, args=ocp.args.StandardSave(state))
    mngr.wait_until_finished()
    mngr.close()
    if bar is not None:
        bar.close()
    return graphdef, state, losses
