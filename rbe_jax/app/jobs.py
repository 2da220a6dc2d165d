"""Large sampling jobs (evaluation sets): numbered ``.npz`` shards, a manifest, resume.

Shard ``i`` holds samples ``[i * batch, min((i + 1) * batch, n))``; its noise comes from
``jax.random.fold_in(jax.random.key(seed), i)``, so every shard is reproducible on its own
and a resumed job writes exactly the bytes an uninterrupted one would.  Each shard is
written to a temporary name and renamed; the manifest (job description plus the SHA-256 of
each finished shard) is rewritten the same way after every shard.  A rerun skips every
shard whose file matches its recorded checksum.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re

from pathlib import Path
from typing import Callable

import jax
import numpy as np

from ..core._batch import place_model_on
from ..core._io import TMP_SUFFIX, atomic_write, npz_bytes, read_json, sha256_bytes, sha256_file, write_json
from ..core.models import prepare_model
from ..core.sampler import rbe_sample
from ..core.schedule import Schedule
from ..core.solvers import DEFAULT_SOLVER, Solver, get_solver

__all__ = ["sample_job", "JobError", "model_fingerprint"]

MANIFEST = "manifest.json"
LOCK = ".rbe_jax.lock"  # held (flock) by the one job writing into a directory
# the temporary siblings that atomic_write makes for the files a job writes (.<name>.<random>.tmp)
_STALE = re.compile(r"\.(manifest\.json|shard_\d{5}\.npz)\.[A-Za-z0-9_]+" + re.escape(TMP_SUFFIX))
FORMAT = "rbe_jax.sample_job"


class JobError(ValueError):
    """The output directory holds another job, or a shard is corrupted."""


def sample_job(
    model,
    schedule: Schedule,
    n: int,
    batch: int,
    out_dir,
    *,
    image_shape: tuple[int, ...],
    seed: int = 0,
    solver: str | Solver = DEFAULT_SOLVER,
    sharding: jax.sharding.Sharding | None = None,
    model_id: str = "",
    progress: bool = False,
    stop_after: int | None = None,
    on_shard: Callable[[int], None] | None = None,
) -> dict:
    """Samples ``n`` images in shards of ``batch`` into ``out_dir``; resumes a stopped job.

    Args:
      model: the model (see :func:`rbe_jax.rbe_sample`; a pytree model: the shard sampler is jit-compiled once).
      schedule: the fixed schedule to sample on.
      n: total samples; batch: samples per shard (the last shard may be smaller).
      out_dir: created if needed; holds ``shard_00000.npz`` ... and ``manifest.json``.
      image_shape: the shape of one sample.
      seed: shard ``i`` uses noise from ``fold_in(key(seed), i)``.
      solver: a solver name or :class:`rbe_jax.Solver`.
      sharding: where each shard's noise batch is placed (e.g. ``NamedSharding(mesh,
        P("batch"))`` to split it over every device); default: the default device.
      model_id: a label recorded in the manifest (e.g. the checkpoint path).  What identifies
        the model on resume is its fingerprint (:func:`model_fingerprint`: parameters,
        prediction and noise process), not this label.
      progress: a tqdm bar with an ETA.
      stop_after: stop after writing this many NEW shards (to simulate an interruption).
      on_shard: called with each shard index after it is written.
    Returns:
      The manifest (a dict).
    Raises:
      JobError: ``out_dir`` holds a different job, another job is writing into it now (a
        lock on ``out_dir/.rbe_jax.lock``), or a shard on disk does not match the manifest
        when the job ends.
    """
    if n < 1 or batch < 1:
        raise ValueError(f"n and batch must be >= 1, got n={n}, batch={batch}")
    model = prepare_model(model)
    if sharding is not None:  # once for the job, not once per shard
        model = place_model_on(model, sharding)
    solver = get_solver(solver)
    out = Path(out_dir)
    job = dict(
        format=FORMAT, n=int(n), batch=int(batch), seed=int(seed), solver=solver.name, image_shape=[int(v) for v in image_shape],
        model=model_id, model_fingerprint=model_fingerprint(model), schedule=schedule.to_dict(), num_shards=-(-n // batch),
    )
    with _lock(out):
        return _run(model, schedule, solver, sharding, out, job, stop_after, progress, on_shard)


def _run(model, schedule, solver, sharding, out: Path, job: dict, stop_after, progress, on_shard) -> dict:
    n = job["n"]
    shards = _resume(out, job)
    todo = [i for i in range(job["num_shards"]) if str(i) not in shards][: stop_after]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, initial=sum(s["count"] for s in shards.values()), unit="img", desc="sampling", dynamic_ncols=True)
    try:
        for i in todo:
            shards[str(i)] = _write_shard(out, i, job, lambda noise: rbe_sample(model, noise, schedule, solver, check_finite=True), sharding)
            write_json(out / MANIFEST, _manifest(job, shards))
            if bar is not None:
                bar.update(shards[str(i)]["count"])
            if on_shard is not None:
                on_shard(i)
    finally:
        if bar is not None:
            bar.close()
    manifest = _manifest(job, shards)
    write_json(out / MANIFEST, manifest)
    _verify(out, read_json(out / MANIFEST, JobError), manifest)
    return manifest


@contextlib.contextmanager
def _lock(out: Path):
    """Holds an exclusive ``flock`` on ``out/.rbe_jax.lock`` for the job (released by the
    kernel when the process dies, so a killed job never leaves a stale lock)."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobError(f"{out}: another sampling job is writing into this directory now (it holds {LOCK}); wait for it or use another --out-dir") from None
        yield
    finally:
        os.close(fd)


def _verify(out: Path, on_disk: dict, manifest: dict) -> None:
    """The manifest on disk is the one this job wrote, and every shard it lists matches its
    checksum (nothing replaced the files while the job ran)."""
    if on_disk != manifest:
        raise JobError(f"{out / MANIFEST} changed while this job ran: another process wrote into {out}")
    bad = [rec["file"] for i, rec in manifest["shards"].items() if not _shard_ok(out, int(i), manifest["shards"])]
    if bad:
        raise JobError(f"{out}: {len(bad)} shard(s) do not match the manifest's checksums after the job: {', '.join(bad[:5])}")


def model_fingerprint(model) -> str:
    """SHA-256 of a prepared model: every array leaf's dtype, shape and bytes, and the tree's
    structure with its static fields (prediction, noise process, functions by name; memory
    addresses in reprs are dropped, so the fingerprint is the same in every process).

    Two models with the same network and other parameters get different fingerprints; the
    same checkpoint loaded twice gets the same one.
    """
    leaves, treedef = jax.tree_util.tree_flatten(model)
    h = hashlib.sha256(re.sub(r" at 0x[0-9a-fA-F]+", "", str(treedef)).encode())
    process = getattr(model, "process", None)  # its tables in full (a repr abbreviates long arrays)
    h.update(str(getattr(process, "fingerprint", "")).encode())
    for leaf in leaves:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            from jax.experimental import multihost_utils

            leaf = multihost_utils.process_allgather(leaf, tiled=True)
        a = np.asarray(leaf)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _resume(out: Path, job: dict) -> dict[str, dict]:
    """Prepares ``out`` (made by :func:`_lock`) for ``job`` and returns the records of the shards already written
    (those whose files match their checksums); stale temporary files are removed.

    Raises:
      JobError: ``out`` holds another job.
    """
    for stale in out.glob(".*" + TMP_SUFFIX):  # a shard or manifest of ours cut off mid-write
        if _STALE.fullmatch(stale.name):  # never a file the job did not name itself
            stale.unlink()
    mpath = out / MANIFEST
    if not mpath.exists():
        return {}
    old = read_json(mpath, JobError)
    if {k: v for k, v in old.items() if k != "shards"} != job:
        diff = sorted(k for k in job if old.get(k) != job[k])
        raise JobError(f"{out} holds another sampling job (different {', '.join(diff)}); use a new --out-dir")
    shards = dict(old.get("shards", {}))
    return {str(i): shards[str(i)] for i in range(job["num_shards"]) if _shard_ok(out, i, shards)}


def _write_shard(out: Path, i: int, job: dict, sample: Callable[[jax.Array], jax.Array], sharding) -> dict:
    """Samples shard ``i`` of ``job`` from its own noise and writes it atomically; returns
    its manifest record."""
    batch, n = job["batch"], job["n"]
    count = min(batch, n - i * batch)
    noise = jax.random.normal(jax.random.fold_in(jax.random.key(job["seed"]), i), (batch, *job["image_shape"]))
    if sharding is not None:
        noise = jax.device_put(noise, sharding)
    try:
        x = np.asarray(sample(noise))[:count]
    except FloatingPointError as e:
        raise FloatingPointError(f"shard {i}: {e}") from None
    name = f"shard_{i:05d}.npz"
    data = npz_bytes(samples=x, index=np.arange(i * batch, i * batch + count))
    atomic_write(out / name, data)
    return dict(file=name, count=count, sha256=sha256_bytes(data))


def _manifest(job: dict, shards: dict[str, dict]) -> dict:
    return dict(job, shards=dict(sorted(shards.items(), key=lambda kv: int(kv[0]))))


def _shard_ok(out: Path, i: int, shards: dict) -> bool:
    rec = shards.get(str(i))
    f = out / f"shard_{i:05d}.npz"
    return rec is not None and f.is_file() and sha256_file(f) == rec.get("sha256")
