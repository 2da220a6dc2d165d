"""Fixed time schedules: the :class:`Schedule` pytree, its JSON form, and baselines.

A schedule of ``m`` steps is a strictly decreasing path of grid indices
``n_0 > n_1 > ... > n_m = -1`` (``-1`` = clean data) together with the matching
original timesteps and alpha-bar values.  Sampling on it costs exactly ``m`` model
evaluations, whatever the solver.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import struct

from ._io import read_json, write_json
from .noise import NoiseSchedule

__all__ = ["Schedule", "ScheduleMeta", "baseline_schedule", "BASELINES", "ScheduleError", "step_tables"]

FORMAT = "rbe_jax.schedule"
VERSION = 1


class ScheduleError(ValueError):
    """A schedule is malformed or does not belong to the grid it is used with."""


@dataclasses.dataclass(frozen=True)
class ScheduleMeta:
    """Descriptive metadata of a :class:`Schedule` (compares by value).

    Attributes:
      method: how the schedule was made: ``"rbe"``, ``"uniform"``, ``"quadratic"``,
        ``"logsnr"``, ``"karras"``, ``"optimized"`` or ``"custom"``.
      K: number of grid points; T: the model's training steps.
      grid_fingerprint: :attr:`NoiseSchedule.fingerprint` of the grid.
      tau: the threshold of the RBE rule (backward error, or local error with
        ``info["rule"] == "local_error"``), else ``None``.
      info: free-form JSON-able details (calibration statistics, ...).
    """

    method: str
    K: int
    T: int
    grid_fingerprint: str
    tau: float | None = None
    info: dict = dataclasses.field(default_factory=dict, hash=False)


class _Untraced:
    """Carries a value through pytree operations without ever keying a jit cache: every
    instance compares equal.  The value itself is never read inside traced code."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, _Untraced)

    def __hash__(self):
        return hash(_Untraced)


def step_tables(alpha_bar) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(alpha, sigma, lambda)`` from alpha-bar in float64 on the host:
    ``alpha = sqrt(abar)``, ``sigma = sqrt(1 - abar)``, ``lambda = log(alpha / sigma)`` (the
    half-log-SNR; ``+inf`` at clean data).  Solvers read these instead of recomputing them
    from alpha-bar in the samples' (possibly low) precision."""
    ab = np.asarray(alpha_bar, np.float64)
    alpha, sigma = np.sqrt(ab), np.sqrt(np.maximum(1.0 - ab, 0.0))
    with np.errstate(divide="ignore"):
        lam = np.log(alpha) - np.log(sigma)
    return alpha, sigma, lam


class Schedule(struct.PyTreeNode, eq=False):
    """An immutable fixed schedule of ``m`` steps (a pytree).

    Build one with :meth:`from_indices`, :func:`baseline_schedule`, :func:`rbe_jax.calibrate`
    or :meth:`load`.

    Attributes (the pytree leaves, each ``(m + 1,)``):
      indices: int32 grid indices, strictly decreasing, ending at ``-1`` (clean data).
      timesteps: int32 original training timesteps (``-1`` for clean data).
      alpha_bar: float64 alpha-bar, strictly increasing, ending at ``1``.
      alpha, sigma, log_snr: float64 ``sqrt(abar)``, ``sqrt(1 - abar)`` and half-log-SNR
        (see :func:`step_tables`), computed on the host when the schedule is made.
    Metadata: :attr:`meta`, a :class:`ScheduleMeta`.  It travels with the pytree but is
    never part of a jit cache key: schedules of one length share one compilation whatever
    their method or provenance.  Two schedules are ``==`` when their metadata and indices
    are equal.
    """

    indices: Any
    timesteps: Any
    alpha_bar: Any
    alpha: Any
    sigma: Any
    log_snr: Any
    meta_box: _Untraced = struct.field(pytree_node=False)

    @classmethod
    def create(cls, indices, timesteps, alpha_bar, meta: ScheduleMeta) -> "Schedule":
        """A schedule from its index, timestep and alpha-bar paths (not validated; see
        :meth:`validate`); the float64 step tables are derived from ``alpha_bar``."""
        alpha_bar = np.asarray(alpha_bar, np.float64)
        return cls(indices, timesteps, alpha_bar, *step_tables(alpha_bar), _Untraced(meta))

    @property
    def meta(self) -> ScheduleMeta:
        return self.meta_box.value

    def __eq__(self, other):
        if not isinstance(other, Schedule):
            return NotImplemented
        return self.meta == other.meta and np.array_equal(np.asarray(self.indices), np.asarray(other.indices))

    __hash__ = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_indices(
        cls,
        grid: NoiseSchedule,
        indices,
        *,
        method: str = "custom",
        tau: float | None = None,
        info: dict | None = None,
    ) -> "Schedule":
        """A schedule from a path of grid indices ``(m + 1,)`` that ends at ``-1``."""
        if not isinstance(grid, NoiseSchedule):
            raise TypeError(f"grid must be a NoiseSchedule, got {type(grid).__name__}")
        idx = np.asarray(indices)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ScheduleError(f"indices must be a 1-D integer array, got {idx.dtype} of shape {idx.shape}")
        _check_indices(idx, grid.K)
        idx = idx.astype(np.int32)
        ts = np.where(idx >= 0, grid.timesteps[np.maximum(idx, 0)], -1).astype(np.int32)
        ab = grid.alpha_bar_ext[idx + 1]
        meta = ScheduleMeta(
            method=method,
            K=grid.K,
            T=grid.num_train_timesteps,
            grid_fingerprint=grid.fingerprint,
            tau=None if tau is None else float(tau),
            info=dict(info or {}),
        )
        return cls.create(idx, ts, ab, meta)

    # ------------------------------------------------------------------ properties
    @property
    def nfe(self) -> int:
        """Number of steps (= model evaluations)."""
        return int(np.shape(self.indices)[0]) - 1

    @property
    def method(self) -> str:
        return self.meta.method

    @property
    def tau(self) -> float | None:
        return self.meta.tau

    @property
    def info(self) -> dict:
        return self.meta.info

    def __repr__(self):
        idx = np.asarray(self.indices).tolist() if not isinstance(self.indices, jax.core.Tracer) else "<traced>"
        tau = "" if self.meta.tau is None else f", tau={self.meta.tau:.4g}"
        return f"Schedule(method={self.meta.method!r}, nfe={self.nfe}, K={self.meta.K}{tau}, indices={idx})"

    # ------------------------------------------------------------------ validation
    def validate(self, grid: NoiseSchedule | None = None) -> "Schedule":
        """Checks the schedule (and, with ``grid``, that it belongs to that grid).

        Raises:
          ScheduleError: naming the problem.
        Returns:
          ``self``, for chaining.
        """
        idx = np.asarray(self.indices)
        _check_indices(idx, self.meta.K)
        ab = np.asarray(self.alpha_bar, np.float64)
        ts = np.asarray(self.timesteps)
        if ab.shape != idx.shape or ts.shape != idx.shape:
            raise ScheduleError(
                f"indices {idx.shape}, timesteps {ts.shape} and alpha_bar {ab.shape} must have one length"
            )
        if ab[-1] != 1.0 or ts[-1] != -1:
            raise ScheduleError("a schedule must end at clean data (alpha_bar 1, timestep -1)")
        if np.any(np.diff(ab) <= 0) or np.any(ab <= 0):
            raise ScheduleError("alpha_bar must be positive and strictly increasing toward clean data")
        if grid is not None:
            if grid.fingerprint != self.meta.grid_fingerprint:
                raise ScheduleError(
                    f"this schedule was made for grid {self.meta.grid_fingerprint} "
                    f"(K={self.meta.K}, T={self.meta.T}), not for grid {grid.fingerprint} "
                    f"(K={grid.K}, T={grid.num_train_timesteps})"
                )
            want = grid.alpha_bar_ext[idx + 1]
            if not np.allclose(ab, want, rtol=1e-9, atol=0):
                raise ScheduleError("alpha_bar does not match the grid at the schedule's indices")
            want_t = np.where(idx >= 0, grid.timesteps[np.maximum(idx, 0)], -1)
            if not np.array_equal(ts, want_t):
                raise ScheduleError("timesteps do not match the grid at the schedule's indices")
        return self

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "method": self.meta.method,
            "nfe": self.nfe,
            "K": self.meta.K,
            "T": self.meta.T,
            "grid_fingerprint": self.meta.grid_fingerprint,
            "tau": self.meta.tau,
            "indices": [int(v) for v in np.asarray(self.indices)],
            "timesteps": [int(v) for v in np.asarray(self.timesteps)],
            "alpha_bar": [float(v) for v in np.asarray(self.alpha_bar, np.float64)],
            "info": self.meta.info,
        }

    def save(self, path) -> Path:
        """Writes readable JSON (atomically: temporary file, then rename)."""
        return write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict, grid: NoiseSchedule | None = None, *, source: str = "schedule") -> "Schedule":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ScheduleError(f"{source}: not an rbe_jax schedule (missing 'format': {FORMAT!r})")
        if d.get("version") != VERSION:
            raise ScheduleError(f"{source}: unsupported schedule version {d.get('version')!r}")
        required = ("method", "K", "T", "grid_fingerprint", "indices", "timesteps", "alpha_bar")
        missing = [k for k in required if k not in d]
        if missing:
            raise ScheduleError(f"{source}: missing fields {missing}")
        try:
            idx = np.asarray(d["indices"], dtype=np.int64)
            ts = np.asarray(d["timesteps"], dtype=np.int64)
            ab = np.asarray(d["alpha_bar"], dtype=np.float64)
            meta = ScheduleMeta(
                method=str(d["method"]),
                K=int(d["K"]),
                T=int(d["T"]),
                grid_fingerprint=str(d["grid_fingerprint"]),
                tau=None if d.get("tau") is None else float(d["tau"]),
                info=dict(d.get("info") or {}),
            )
        except (TypeError, ValueError) as e:
            raise ScheduleError(f"{source}: malformed field: {e}") from e
        if "nfe" in d and int(d["nfe"]) != idx.size - 1:
            raise ScheduleError(f"{source}: 'nfe' is {d['nfe']} but indices describe {idx.size - 1} steps")
        sched = cls.create(idx.astype(np.int32), ts.astype(np.int32), ab, meta)
        try:
            return sched.validate(grid)
        except ScheduleError as e:
            raise ScheduleError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path, grid: NoiseSchedule | None = None) -> "Schedule":
        """Reads and validates a schedule written by :meth:`save`.

        Args:
          path: the JSON file.
          grid: if given, the schedule must have been made for this grid (fingerprint,
            alpha-bar and timesteps are checked).
        Raises:
          FileNotFoundError, ScheduleError: naming the path and the problem.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"schedule file not found: {path}")
        return cls.from_dict(read_json(path, ScheduleError), grid, source=str(path))


def _check_indices(idx: np.ndarray, K: int) -> None:
    if idx.size < 2:
        raise ScheduleError(f"a schedule needs at least one step (2 indices), got {idx.size}")
    if idx[-1] != -1:
        raise ScheduleError(f"a schedule must end at clean data (index -1), it ends at {int(idx[-1])}")
    if idx[0] > K - 1 or idx.min() < -1:
        raise ScheduleError(f"indices must lie in [-1, {K - 1}] for a grid of K={K}")
    d = np.diff(idx)
    if np.any(d >= 0):
        i = int(np.argmax(d >= 0))
        raise ScheduleError(
            f"indices must be strictly decreasing (noise -> data); position {i + 1} "
            f"({int(idx[i + 1])}) does not come below position {i} ({int(idx[i])})"
        )


def check_nfe(nfe, upper: int, what: str = "nfe") -> int:
    """Validates ``1 <= nfe <= upper`` for an integer ``nfe``; returns it as int."""
    if isinstance(nfe, bool) or not isinstance(nfe, (int, np.integer)):
        raise TypeError(f"{what} must be an integer, got {type(nfe).__name__}")
    if not 1 <= int(nfe) <= upper:
        raise ValueError(f"{what} must satisfy 1 <= {what} <= {upper}, got {nfe}")
    return int(nfe)


def strictly_decreasing_path(values: np.ndarray, K: int) -> np.ndarray:
    """Rounds a real-valued decreasing path to grid indices and makes it strictly decreasing.

    ``values``: ``(m + 1,)`` positions from about ``K - 1`` down to ``-1``.  Rounds half up,
    pins the ends to ``values[0]`` rounded and ``-1``, then pushes any collision apart
    (``m <= K`` guarantees room).
    """
    m = values.size - 1
    idx = np.floor(np.asarray(values, np.float64) + 0.5).astype(np.int64)
    idx[-1] = -1
    idx = np.clip(idx, -1, K - 1)
    for i in range(m - 1, -1, -1):  # from the data end: each at least one above the next
        idx[i] = max(idx[i], idx[i + 1] + 1)
    if idx[0] > K - 1:  # collisions pushed past the top: pull back from the noise end
        idx[0] = K - 1
        for i in range(1, m + 1):
            idx[i] = min(idx[i], idx[i - 1] - 1)
    return idx


def _uniform(grid: NoiseSchedule, nfe: int) -> np.ndarray:
    return (grid.K - 1) * (1.0 - np.arange(nfe + 1) / nfe)


def _quadratic(grid: NoiseSchedule, nfe: int) -> np.ndarray:
    return (grid.K - 1) * (1.0 - np.arange(nfe + 1) / nfe) ** 2


def _logsnr(grid: NoiseSchedule, nfe: int) -> np.ndarray:
    lam = grid.log_snr  # increasing toward data (index 0)
    targets = np.linspace(lam[-1], lam[0], nfe + 1)
    # nearest grid point in half-log-SNR for each target (lam is monotone in the index)
    order = np.argsort(lam)
    pos = np.interp(targets, lam[order], order.astype(np.float64))
    return pos


def _karras(grid: NoiseSchedule, nfe: int, rho: float = 7.0) -> np.ndarray:
    # EDM's sigma = sqrt((1 - abar) / abar) = exp(-lambda), spaced evenly in sigma^(1/rho)
    sig = np.exp(-grid.log_snr)  # decreasing toward data (index 0)
    lo, hi = sig[0] ** (1 / rho), sig[-1] ** (1 / rho)
    targets = (hi + np.arange(nfe + 1) / nfe * (lo - hi)) ** rho
    order = np.argsort(sig)
    return np.interp(np.log(targets), np.log(sig[order]), order.astype(np.float64))


BASELINES = {"uniform": _uniform, "quadratic": _quadratic, "logsnr": _logsnr, "karras": _karras}


def baseline_schedule(grid: NoiseSchedule, nfe: int, kind: str = "uniform") -> Schedule:
    """A standard fixed schedule of ``nfe`` steps on ``grid``.

    All start at the noisiest grid point ``K - 1`` and end at clean data (``-1``); the
    ``nfe + 1`` points are placed on the grid-index axis from ``K - 1`` to ``0``, and the
    last of them (at grid point 0, whose alpha-bar is within ``1e-4`` of 1 for DDPM
    schedules) is replaced by clean data, so no evaluation is spent on a vanishing step:

    - ``uniform``: evenly spaced grid indices (DDIM's uniform skip);
    - ``quadratic``: indices ``(K - 1) (1 - i / nfe)^2``, dense near the data (DDIM paper);
    - ``logsnr``: evenly spaced in half-log-SNR between the grid's ends (DPM-Solver's
      ``logSNR`` skip), each snapped to the grid;
    - ``karras``: EDM's spacing (Karras et al. 2022), even in ``sigma^(1/7)`` with
      ``sigma = sqrt((1 - abar) / abar)``, each snapped to the grid.

    Collisions after rounding are pushed apart so that the path stays strictly decreasing.

    Args:
      grid: the (respaced) noise schedule.
      nfe: number of steps, ``1 <= nfe <= K``.
      kind: one of :data:`BASELINES`.
    Returns:
      A validated :class:`Schedule` with ``method=kind``.
    """
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline schedule kind {kind!r}; choose one of {sorted(BASELINES)}")
    nfe = check_nfe(nfe, grid.K)
    idx = strictly_decreasing_path(BASELINES[kind](grid, nfe), grid.K)
    return Schedule.from_indices(grid, idx, method=kind)
