"""Files: JSON reading with errors that name the file, atomic writes, SHA-256 checksums.

Every file the library writes (schedules, sampling-job shards and manifests, model
configs, CLI outputs) goes through :func:`atomic_write`: the bytes land in a temporary
sibling that is renamed over the target only once complete, so an interruption never
leaves a half-written file under the real name.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read_json", "atomic_write", "atomic_write_all", "temporary_sibling", "write_json", "npz_bytes", "sha256_bytes", "sha256_file", "TMP_SUFFIX", "probe_writable"]

TMP_SUFFIX = ".tmp"


def read_json(path, error: type[Exception]) -> dict:
    """Parses ``path``, which must hold one JSON object; a truncated, corrupted or absurdly
    nested file, or one that holds another kind of value, raises ``error`` naming it."""
    try:
        d = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid JSON (truncated or corrupted?): {e}") from None
    except RecursionError:
        raise error(f"{path}: JSON nested too deeply to be one of our files") from None
    if not isinstance(d, dict):
        raise error(f"{path}: expected a JSON object, found a {type(d).__name__}")
    return d


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file: ``0o666`` less the process umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def temporary_sibling(path) -> Path:
    """A fresh, empty file next to ``path`` (same directory, so a rename is atomic), named
    ``.<name>.<random>.tmp``, with the permissions of a normally created file (``mkstemp``
    alone would leave the final file readable by its owner only)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, _new_file_mode())
    return Path(tmp)


def probe_writable(directory) -> None:
    """Creates and removes one temporary file in ``directory`` (an existing directory), the
    only check that holds for root, read-only mounts and pseudo file systems such as
    ``/proc`` alike (``os.access`` answers yes to root on a read-only directory).

    Raises:
      OSError: nothing can be written there; the message names the directory.
    """
    try:
        fd, tmp = tempfile.mkstemp(prefix=".rbe_jax-probe.", suffix=TMP_SUFFIX, dir=directory)
    except OSError as e:
        raise OSError(f"{directory} is not writable: {e.strerror or e}") from None
    os.close(fd)
    os.unlink(tmp)


def atomic_write(path, data: bytes | str) -> Path:
    """Writes ``data`` to ``path`` through a temporary sibling and a rename.

    The parent directory is created if needed.  On any failure the temporary file is
    removed and an existing ``path`` is left untouched.
    """
    atomic_write_all({path: data})
    return Path(path)


def atomic_write_all(files: dict) -> None:
    """Writes several files ``{path: bytes}`` so that either all of them are replaced or none:
    every temporary sibling is written first, and only then are they renamed into place.
    On a failure while writing, the temporaries are removed and no target is touched."""
    tmps: dict[Path, Path] = {}
    try:
        for path, data in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmps[path] = temporary_sibling(path)
            tmps[path].write_bytes(data.encode() if isinstance(data, str) else data)
        for path, tmp in tmps.items():
            os.replace(tmp, path)
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """A byte-for-byte deterministic ``.npz`` (fixed zip timestamps, no pickles)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0)), member.getvalue())
    return buf.getvalue()


def write_json(path, obj: Any) -> Path:
    """Readable JSON (one space indent), written with :func:`atomic_write`."""
    return atomic_write(path, json.dumps(obj, indent=1) + "\n")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
