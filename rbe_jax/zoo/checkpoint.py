"""Saving and restoring score networks: Orbax (``nnx.split`` state) plus a JSON config.

A model directory holds::

    config.json   architecture, noise schedule, image shape, provenance, and a SHA-256 of
                  every parameter file (so truncation or corruption is named, not guessed)
    params/       an Orbax StandardCheckpointer directory of the NNX parameter state

Nothing is pickled: Orbax writes tensorstore arrays and JSON metadata.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from ..core._io import read_json, sha256_file, write_json
from ..core.models import PREDICTIONS
from ..core.noise import NoiseSchedule, noise_schedule_from_origin

if TYPE_CHECKING:  # the U-Net (and Flax NNX, Orbax) load when a model is loaded or saved
    from .nets.unet import UNet, UNetConfig

__all__ = [
    "CheckpointError",
    "ModelInfo",
    "save_model",
    "load_model",
    "load_model_info",
    "load_pretrained",
    "load_denoiser",
    "model_info",
    "pretrained_path",
    "noise_schedule_from_spec",
    "PRETRAINED",
]

FORMAT = "rbe_jax.model"
VERSION = 1

def _architectures() -> dict[str, tuple[type, type]]:
    """``{name: (module class, config class)}`` of the architectures a checkpoint may name."""
    from .nets.unet import UNet, UNetConfig

    return {"UNet": (UNet, UNetConfig)}

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
PRETRAINED = ("digits", "digits_cond", "digits_flow")


class CheckpointError(ValueError):
    """A model directory is missing, truncated, corrupted, or does not match its config."""


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What a model directory describes (read from its ``config.json``)."""

    path: Path
    architecture: str
    config: "UNetConfig"
    noise_schedule: NoiseSchedule
    noise_schedule_spec: dict
    prediction: str
    image_shape: tuple[int, ...]
    param_count: int
    meta: dict

    @property
    def default_grid(self) -> NoiseSchedule:
        """The grid that schedules for this model are made on (``meta["grid_K"]``, default 100)."""
        return self.noise_schedule.respace(int(self.meta.get("grid_K", 100)))


def noise_schedule_from_spec(spec: dict) -> NoiseSchedule:
    """A model config's ``noise_schedule`` entry -> :class:`NoiseSchedule`: ``{"kind":
    "linear", "T": .., "beta_start": .., "beta_end": ..}``, ``{"kind": "cosine", "T": ..}``, or
    any other :attr:`NoiseSchedule.origin` (``vp_continuous``, ``ve``, ``edm``, ``flow``)."""
    try:
        return noise_schedule_from_origin(spec)
    except (TypeError, KeyError) as e:
        raise CheckpointError(f"invalid noise schedule {spec!r}: {e}") from None
    except ValueError as e:
        raise CheckpointError(str(e)) from None


def _param_files(params_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(params_dir)): sha256_file(p) for p in sorted(params_dir.rglob("*")) if p.is_file()}


def save_model(
    path,
    model: "UNet",
    *,
    noise_schedule_spec: dict,
    prediction: str = "eps",
    meta: dict | None = None,
    params: Any = None,
    overwrite: bool = False,
) -> Path:
    """Writes ``model`` (or ``params`` for its structure, e.g. EMA weights) to ``path``.

    Args:
      path: the model directory to create.
      model: a :class:`UNet` (its config and, unless ``params`` is given, its weights).
      noise_schedule_spec: how the model was trained, see :func:`noise_schedule_from_spec`.
      prediction: what the network outputs, one of :data:`rbe_jax.core.models.PREDICTIONS`.
      meta: extra JSON-able provenance (training steps, loss, grid_K, ...).
      params: an ``nnx.State`` of parameters to save instead of the model's own.
      overwrite: replace an existing directory.
    Returns:
      The directory.  It is written to a temporary sibling and renamed, so a crash never
      leaves a half-written model under ``path``.
    """
    import orbax.checkpoint as ocp
    from flax import nnx

    path = Path(path).absolute()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)")
    check_replaceable(path)
    noise_schedule_from_spec(noise_schedule_spec)  # validates
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    state = nnx.state(model, nnx.Param) if params is None else params
    state = nnx.to_pure_dict(state) if isinstance(state, nnx.State) else state  # plain nested dict of arrays
    n_params = int(sum(np.size(x) for x in jax.tree_util.tree_leaves(state)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".tmp", dir=path.parent))
    try:
        ckptr = ocp.StandardCheckpointer()
        ckptr.save(tmp / "params", state)
        ckptr.wait_until_finished()
        cfg = model.config
        config = {
            "format": FORMAT,
            "version": VERSION,
            "architecture": type(model).__name__,
            "config": cfg.to_dict(),
            "noise_schedule": dict(noise_schedule_spec),
            "prediction": prediction,
            "image_shape": [cfg.image_size, cfg.image_size, cfg.in_channels],
            "param_count": n_params,
            "meta": dict(meta or {}),
            "files": _param_files(tmp / "params"),
        }
        write_json(tmp / "config.json", config)
        tmp.chmod(0o755)  # mkdtemp makes it private
        old = None
        if path.exists():  # an earlier export: moved aside, replaced by one rename, then removed
            old = Path(tempfile.mkdtemp(prefix=path.name + ".old", dir=path.parent))
            os.replace(path, old / path.name)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:
                os.replace(old / path.name, path)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def check_replaceable(path) -> None:
    """Refuses a ``path`` that :func:`save_model` may not replace: anything that exists and is
    not a directory it wrote (its ``config.json`` names our format).

    Raises:
      FileExistsError: naming the path.
    """
    path = Path(path)
    if path.exists() and not _is_model_dir(path):
        raise FileExistsError(f"{path} exists and is not an rbe_jax model directory (no config.json of format {FORMAT!r}): refusing to replace it")


def _is_model_dir(path: Path) -> bool:
    try:
        with open(path / "config.json") as f:
            return path.is_dir() and json.load(f).get("format") == FORMAT
    except (OSError, ValueError, AttributeError, RecursionError):
        return False


def load_model_info(path) -> ModelInfo:
    """Reads and checks ``config.json`` of a model directory (no weights are loaded)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model directory not found: {path}")
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a model directory (it is a file)")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{path}: missing config.json (not an rbe_jax model directory)")
    d = read_json(cfg_path, CheckpointError)
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path}: not an rbe_jax model config (format {d.get('format') if isinstance(d, dict) else None!r})")
    if d.get("version") != VERSION:
        raise CheckpointError(f"{cfg_path}: unsupported model format version {d.get('version')!r}")
    arch = d.get("architecture")
    architectures = _architectures()
    if arch not in architectures:
        raise CheckpointError(f"{cfg_path}: unknown architecture {arch!r}; this rbe_jax knows {sorted(architectures)}")
    try:
        cfg = architectures[arch][1].from_dict(d["config"])
        spec = d["noise_schedule"]
        ns = noise_schedule_from_spec(spec)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: invalid config: {e}") from None
    prediction = d.get("prediction", "eps")
    if prediction not in PREDICTIONS:
        raise CheckpointError(f"{cfg_path}: unknown prediction {prediction!r} (expected one of {PREDICTIONS})")
    _check_files(path, d)
    image_shape = [cfg.image_size, cfg.image_size, cfg.in_channels]
    if d.get("image_shape", image_shape) != image_shape:
        raise CheckpointError(f"{cfg_path}: image_shape {d.get('image_shape')!r} does not match the architecture's config {image_shape}")
    return ModelInfo(
        path=path,
        architecture=arch,
        config=cfg,
        noise_schedule=ns,
        noise_schedule_spec=dict(spec),
        prediction=prediction,
        image_shape=tuple(image_shape),
        param_count=int(d.get("param_count", -1)),
        meta=dict(d.get("meta") or {}),
    )


def _check_files(path: Path, d: dict) -> None:
    """The recorded parameter files are exactly the files under ``params/``: each listed one
    exists inside it and has its recorded SHA-256, and no other file is there (a file that
    no checksum covers could change the restored weights unseen)."""
    params_dir = path / "params"
    if not params_dir.is_dir():
        raise CheckpointError(f"{path}: missing params/ directory (the Orbax parameter checkpoint)")
    want = d.get("files")
    if not isinstance(want, dict) or not want:
        raise CheckpointError(f"{path / 'config.json'}: no file checksums recorded")
    root = params_dir.resolve()
    for rel, digest in want.items():
        f = params_dir / rel
        if not isinstance(rel, str) or Path(rel).is_absolute() or ".." in Path(rel).parts or not f.resolve().is_relative_to(root):
            raise CheckpointError(f"{path / 'config.json'}: the listed parameter file {rel!r} lies outside {params_dir}")
        if not f.is_file():
            raise CheckpointError(f"{path}: parameter file params/{rel} is missing (truncated copy?)")
        if not isinstance(digest, str) or sha256_file(f) != digest:
            raise CheckpointError(f"{path}: parameter file params/{rel} is truncated or corrupted (checksum mismatch)")
    extra = sorted(str(p.relative_to(params_dir)) for p in params_dir.rglob("*") if (p.is_file() or p.is_symlink()) and str(p.relative_to(params_dir)) not in want)
    if extra:
        raise CheckpointError(
            f"{path}: {len(extra)} file(s) under params/ have no checksum in config.json, e.g. params/{extra[0]} "
            "(added or replaced after the export?); refusing to load parameters that are not covered"
        )


def _abstract_model(info: ModelInfo):
    from flax import nnx

    cls = _architectures()[info.architecture][0]
    abstract = nnx.eval_shape(lambda: cls(info.config, nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract, nnx.Param)
    return graphdef, state, nnx.to_pure_dict(state)


def _flat_shapes(tree) -> dict[str, tuple[int, ...]]:
    """``{"down/0/conv1/kernel": shape}``; Orbax stores integer keys as strings, so keys are
    compared as text."""
    out = {}
    for kpath, leaf in jax.tree_util.tree_leaves_with_path(tree):
        name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in kpath)
        out[name] = tuple(leaf.shape)
    return out


def load_model(path, *, sharding: jax.sharding.Sharding | None = None) -> "UNet":
    """Restores a model directory written by :func:`save_model`.

    Args:
      path: the model directory.
      sharding: where to put every parameter (e.g. ``NamedSharding(mesh, P())`` to
        replicate it over a mesh); the arrays are then committed there.  Default: uncommitted
        arrays on the default device, which ``jax.jit`` moves to wherever the batch lives, so
        the model works with a batch on one device or sharded over any mesh.
    Returns:
      The NNX module (a pytree): pass it straight to ``jax.jit(rbe_sample)``.
    Raises:
      FileNotFoundError: no such directory.
      CheckpointError: missing / truncated / corrupted files, an unknown architecture, or
        parameters that do not match the config (names the path and the first mismatches).
    """
    import orbax.checkpoint as ocp
    from flax import nnx

    if sharding is not None and not isinstance(sharding, jax.sharding.Sharding):
        raise TypeError(f"sharding must be a jax.sharding.Sharding, got {type(sharding).__name__}")
    info = load_model_info(path)
    params_dir = Path(path).absolute() / "params"
    graphdef, abstract_state, abstract = _abstract_model(info)
    ckptr = ocp.StandardCheckpointer()
    try:
        stored = ckptr.metadata(params_dir).item_metadata.tree
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read the parameter checkpoint metadata: {e}") from None
    want, have = _flat_shapes(abstract), _flat_shapes(stored)
    problems = [f"{k}: missing" for k in want if k not in have]
    problems += [f"{k}: not in this architecture" for k in have if k not in want]
    problems += [f"{k}: stored {have[k]}, config needs {want[k]}" for k in want if k in have and have[k] != want[k]]
    if problems:
        raise CheckpointError(
            f"{path}: the parameters do not match config.json ({len(problems)} problems), e.g. " + "; ".join(problems[:3])
        )
    on = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=on), abstract)
    try:
        restored = ckptr.restore(params_dir, target)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot restore the parameters: {type(e).__name__}: {e}") from None
    if sharding is None:  # uncommitted: jit may place them next to any batch
        restored = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a)), restored)
    nnx.replace_by_pure_dict(abstract_state, restored)
    return nnx.merge(graphdef, abstract_state)


def pretrained_path(name: str = "digits") -> Path:
    """Directory of a model shipped inside the package."""
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained model {name!r}; shipped: {list(PRETRAINED)}")
    return PRETRAINED_DIR / name


def load_pretrained(name: str = "digits", *, label=None, guidance: float = 0.0, sharding: jax.sharding.Sharding | None = None):
    """The shipped model ``name`` (see :data:`PRETRAINED`), ready to sample: the network
    restored and wrapped with the prediction and the noise schedule it was trained with
    (``digits_flow`` is a velocity model of a flow process), so every entry point reads its
    output right; ``model.noise_schedule`` is its training schedule.  The same as
    :func:`load_denoiser` of a shipped name; :func:`load_model` restores the bare network.

    Args:
      name: ``"digits"``, ``"digits_cond"`` or ``"digits_flow"``.
      label, guidance: for ``digits_cond``: the class label(s) and the classifier-free
        guidance weight (see :func:`load_denoiser`).
      sharding: where to put the parameters (see :func:`load_model`).
    Returns:
      A :class:`rbe_jax.Denoiser` (a pytree: it passes through ``jax.jit(rbe_sample)``).
    """
    return load_denoiser(pretrained_path(name), label=label, guidance=guidance, sharding=sharding)


def model_info(name_or_path) -> ModelInfo:
    """The :class:`ModelInfo` of a shipped model (by name, see :data:`PRETRAINED`) or a model
    directory (an existing path wins over a name)."""
    p = Path(name_or_path)
    if not p.exists() and str(name_or_path) in PRETRAINED:
        p = pretrained_path(str(name_or_path))
    return load_model_info(p)


def load_denoiser(name_or_path, *, label=None, guidance: float = 0.0, sharding: jax.sharding.Sharding | None = None):
    """A shipped model (by name) or a model directory, ready to sample: the network restored,
    wrapped with classifier-free guidance when a ``label`` is given (class-conditional models),
    and adapted to the internal form with the prediction and noise schedule its config
    records (:func:`rbe_jax.as_model`).

    Args:
      name_or_path: ``"digits"``, ``"digits_cond"``, ``"digits_flow"`` or a directory.
      label: int label(s) (scalar or ``(B,)``) for a class-conditional model.
      guidance: the guidance weight ``w >= 0`` (needs ``label``).
      sharding: where to put the parameters (see :func:`load_model`).
    Returns:
      A :class:`rbe_jax.core.models.Denoiser` for :func:`rbe_jax.rbe_sample` and the other entry
      points; it carries its training noise schedule (``.noise_schedule``, the same as
      ``model_info(name_or_path).noise_schedule``).
    Raises:
      ValueError: a label for an unconditional model, a label out of range, or guidance
        without a label.
    """
    from ..core.models import ClassifierFreeGuidance, as_model

    info = model_info(name_or_path)
    net = load_model(info.path, sharding=sharding)
    num_classes = int(getattr(info.config, "num_classes", 0))
    if label is None:
        if guidance:
            raise ValueError("guidance needs a label")
    else:
        if num_classes == 0:
            raise ValueError("a label needs a class-conditional model (this one has num_classes=0)")
        labels = np.asarray(label)
        if np.any(labels < 0) or np.any(labels >= num_classes):
            raise ValueError(f"labels must lie in [0, {num_classes - 1}], got {label}")
        if not (np.isfinite(guidance) and guidance >= 0):
            raise ValueError(f"guidance must be a finite number >= 0, got {guidance}")
        net = ClassifierFreeGuidance(model=net, label=jnp.asarray(labels, jnp.int32), scale=float(guidance), null_label=num_classes)
    return as_model(net, prediction=info.prediction, noise_schedule=info.noise_schedule)
