"""Fixed time schedules: the :class:`Schedule` pytree, its JSON form, and the baselines.

A schedule of ``m`` steps is a strictly increasing array of ``m + 1`` half-log-SNR values
``lam_0 < lam_1 < ... < lam_m = +inf`` (``+inf``: clean data; ``lam_0`` may be ``-inf``, pure
noise, for flow models and zero-terminal-SNR tables) on one noise process.  Sampling on it
costs exactly ``m`` model evaluations, whatever the solver.  The times are the schedule's
only array (a float pytree leaf): schedules are differentiable with respect to them, and
``Schedule.from_lambdas`` accepts traced values.  A schedule made on a grid (RBE, the
discrete searches) also records its grid indices.

The baselines are placed in continuous time (:func:`baseline_schedule`): evenly in the model's
own time (``uniform``), quadratically in it (``quadratic``), evenly in half-log-SNR
(``logsnr``), EDM's ``karras`` spacing and the SD3 ``shift`` of flow models.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ._io import read_json, write_json
from .noise import NoiseSchedule, Point

__all__ = ["Schedule", "ScheduleMeta", "baseline_schedule", "default_spacing", "BASELINES", "ScheduleError", "schedule_points"]

FORMAT = "rbe_jax.schedule"
VERSION = 2
LAM_TOL = 1e-5  # how far outside the process's lambda range a point may sit (float32 rounding of its times)


class ScheduleError(ValueError):
    """A schedule is malformed or does not belong to the noise schedule it is used with."""


@dataclasses.dataclass(frozen=True)
class ScheduleMeta:
    """Descriptive metadata of a :class:`Schedule`: static, compared and hashed by value, so
    it survives ``jax.jit`` as it is (schedules of other provenance are other jit keys).

    Attributes:
      method: how the schedule was made: ``"rbe"``, ``"uniform"``, ``"quadratic"``,
        ``"logsnr"``, ``"karras"``, ``"shift"``, ``"optimized"``, ``"local_dp"`` or
        ``"custom"``.
      noise_schedule: the :class:`NoiseSchedule` (process and grid) it was made on; ``None``
        for a version-1 file loaded without one.
      K, T: grid points and the length of the full grid; grid_fingerprint: the grid's.
      indices: grid indices ``(m + 1,)`` (``-1`` = clean data) of a schedule made on the
        grid, else ``None``.
      tau: the threshold of the RBE rule, else ``None``.
      info_json: free-form details (calibration statistics, ...) as canonical JSON; read
        them as :attr:`info`.
      host: the times at construction and their float64 tables ``(lam, Point...)``, as
        tuples: under ``jax.jit`` a sampler uses them for the forward values (the same
        numbers as an eager call) and differentiates the traced times (see
        :func:`schedule_points`); ``None`` for traced times.
    """

    method: str
    noise_schedule: NoiseSchedule | None
    K: int
    T: int
    grid_fingerprint: str
    indices: tuple[int, ...] | None = None
    tau: float | None = None
    info_json: str = "{}"
    host: tuple | None = dataclasses.field(default=None, repr=False)

    @property
    def info(self) -> dict:
        """A fresh dict of :attr:`info_json`."""
        return json.loads(self.info_json)


def _info_json(info: dict | None) -> str:
    try:
        return json.dumps(dict(info or {}), sort_keys=True)
    except TypeError as e:
        raise TypeError(f"schedule info must be JSON-serialisable: {e}") from None


def _host(ns: NoiseSchedule | None, lam) -> tuple | None:
    """``(lam, *Point)`` of concrete times, as tuples of floats (see :attr:`ScheduleMeta.host`)."""
    if ns is None or lam is None or isinstance(lam, jax.core.Tracer):
        return None
    lam = np.asarray(lam, np.float64)
    return tuple(tuple(float(v) for v in np.broadcast_to(a, lam.shape)) for a in (lam, *ns.points(lam)))


def _meta(ns: NoiseSchedule, method: str, lam, indices=None, tau=None, info=None) -> ScheduleMeta:
    return ScheduleMeta(
        method=str(method),
        noise_schedule=ns,
        K=ns.K,
        T=ns.num_train_timesteps,
        grid_fingerprint=ns.fingerprint,
        indices=None if indices is None else tuple(int(i) for i in indices),
        tau=None if tau is None else float(tau),
        info_json=_info_json(info),
        host=_host(ns, lam),
    )


class Schedule(struct.PyTreeNode, eq=False):
    """An immutable fixed schedule of ``m`` steps (a pytree).

    Build one with :func:`baseline_schedule`, :meth:`from_lambdas`, :meth:`from_times`,
    :meth:`from_indices`, :func:`rbe_jax.calibrate`, :func:`rbe_jax.optimize_schedule` or
    :meth:`load`.

    Attributes:
      lam: ``(m + 1,)`` half-log-SNR of the points, strictly increasing, ending at ``+inf``
        (the only pytree leaf; float64 on the host, traced under jit or grad).
      meta: :class:`ScheduleMeta` (static).
    Two schedules are ``==`` when their metadata and times are equal.
    """

    lam: Any
    meta: ScheduleMeta = struct.field(pytree_node=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_lambdas(cls, noise_schedule: NoiseSchedule, lam, *, method: str = "custom", tau=None, info=None) -> "Schedule":
        """A schedule from its half-log-SNR values ``(m + 1,)`` (the last ``+inf``).  A traced
        ``lam`` (inside ``jax.grad``, say) is taken as is; a concrete one is validated."""
        _check_ns(noise_schedule)
        if isinstance(lam, jax.core.Tracer):
            return cls(lam, _meta(noise_schedule, method, lam, tau=tau, info=info))
        if np.iscomplexobj(lam):
            raise ScheduleError("lam must be real numbers, got a complex array")
        lam = np.asarray(lam, np.float64)
        cls(lam, _meta(noise_schedule, method, None, tau=tau, info=info)).validate()  # before any table is made of it
        return cls(lam, _meta(noise_schedule, method, lam, tau=tau, info=info))

    @classmethod
    def from_times(cls, noise_schedule: NoiseSchedule, times, *, method: str = "custom", info=None) -> "Schedule":
        """A schedule from the model's own times of its ``m`` evaluation points, noisiest
        first (training timesteps, ``t``, EDM's sigmas, flow ``t``); clean data is appended.
        A last time that is itself clean data (a k-diffusion sigma array ending in 0) is
        taken as that end.

        Raises:
          ScheduleError: not a 1-D array, a time that is not finite, or one outside the
            model's trained time range (named, with the range).
        """
        _check_ns(noise_schedule)
        if np.iscomplexobj(times):
            raise ScheduleError("times must be real numbers, got a complex array")
        t = np.asarray(times, np.float64)
        if t.ndim != 1 or t.size < 1:
            raise ScheduleError(f"times must be a 1-D array of at least one time, got shape {t.shape}")
        if not np.all(np.isfinite(t)):
            i = int(np.flatnonzero(~np.isfinite(t))[0])
            raise ScheduleError(f"times must be finite, got {t[i]} at index {i}")
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = np.asarray(noise_schedule.lam_of_time(t), np.float64)
        if t.size > 1 and np.isposinf(lam[-1]):  # the clean end given explicitly
            t, lam = t[:-1], lam[:-1]
        lo, hi = sorted(float(v) for v in noise_schedule.model_time(np.asarray(noise_schedule.lam_range)))
        tol = 1e-9 * max(abs(lo), abs(hi), 1.0)
        bad = np.flatnonzero((t < lo - tol) | (t > hi + tol))
        if bad.size:
            i = int(bad[0])
            raise ScheduleError(
                f"time {t[i]:g} at index {i} lies outside the model's trained time range [{lo:g}, {hi:g}] "
                f"({noise_schedule.describe()}); {bad.size} of {t.size} times do"
            )
        return cls.from_lambdas(noise_schedule, np.append(lam, np.inf), method=method, info=info)

    @classmethod
    def from_indices(cls, grid: NoiseSchedule, indices, *, method: str = "custom", tau=None, info=None) -> "Schedule":
        """A schedule on ``grid`` from a path of grid indices ``(m + 1,)`` ending at ``-1``."""
        _check_ns(grid, "grid")
        idx = np.asarray(indices)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ScheduleError(f"indices must be a 1-D integer array, got {idx.dtype} of shape {idx.shape}")
        _check_indices(idx, grid.K)
        lam = np.append(grid.log_snr[idx[:-1]], np.inf)
        return cls(lam, _meta(grid, method, lam, indices=idx, tau=tau, info=info)).validate()

    # ------------------------------------------------------------------ properties
    @property
    def nfe(self) -> int:
        """Number of steps (= model evaluations)."""
        return int(np.shape(self.lam)[0]) - 1

    @property
    def method(self) -> str:
        return self.meta.method

    @property
    def tau(self) -> float | None:
        return self.meta.tau

    @property
    def info(self) -> dict:
        return self.meta.info

    @property
    def noise_schedule(self) -> NoiseSchedule:
        """The noise schedule it was made on (raises for a version-1 file loaded without one)."""
        ns = self.meta.noise_schedule
        if ns is None:
            raise ScheduleError(
                f"this schedule (made for grid {self.meta.grid_fingerprint}, K={self.meta.K}, T={self.meta.T}) "
                "was loaded without its noise schedule: Schedule.load(path, noise_schedule)"
            )
        return ns

    @property
    def indices(self) -> np.ndarray | None:
        """``(m + 1,)`` int32 grid indices (``-1`` = clean data), or ``None`` off the grid."""
        return None if self.meta.indices is None else np.asarray(self.meta.indices, np.int32)

    def _host_lam(self) -> np.ndarray:
        if isinstance(self.lam, jax.core.Tracer):
            raise ScheduleError("this schedule's times are traced: read them outside jax.jit / jax.grad")
        return np.asarray(self.lam, np.float64)

    def points(self) -> Point:
        """Host float64 :class:`rbe_jax.core.noise.Point` of every point (``(m + 1,)`` each)."""
        return self.noise_schedule.points(self._host_lam())

    @property
    def alpha_bar(self) -> np.ndarray:
        """``(m + 1,)`` VP alpha-bar ``sigmoid(2 lam)`` (1 at clean data)."""
        if self.meta.indices is not None and self.meta.noise_schedule is not None:
            return self.noise_schedule.alpha_bar_ext[self.indices + 1]
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-2.0 * self._host_lam()))

    @property
    def model_times(self) -> np.ndarray:
        """``(m,)`` the model's own time input at each evaluation point."""
        return np.asarray(self.points().t[:-1], np.float64)

    @property
    def timesteps(self) -> np.ndarray:
        """``(m + 1,)`` :attr:`model_times` with ``-1`` for clean data (as earlier versions)."""
        return np.append(self.model_times, -1.0)

    def __eq__(self, other):
        if not isinstance(other, Schedule):
            return NotImplemented
        return self.meta == other.meta and np.array_equal(np.asarray(self.lam), np.asarray(other.lam))

    __hash__ = None

    def __repr__(self):
        lam = "<traced>" if isinstance(self.lam, jax.core.Tracer) else np.round(np.asarray(self.lam, np.float64), 4).tolist()
        tau = "" if self.meta.tau is None else f", tau={self.meta.tau:.4g}"
        where = "" if self.meta.indices is None else f", indices={list(self.meta.indices)}"
        return f"Schedule(method={self.meta.method!r}, nfe={self.nfe}{tau}, lam={lam}{where})"

    # ------------------------------------------------------------------ validation
    def validate(self, noise_schedule: NoiseSchedule | None = None) -> "Schedule":
        """Checks the schedule and, with ``noise_schedule``, that it belongs to it: a schedule
        on a grid to that grid, any other to its process.

        Raises:
          ScheduleError: naming the problem.
        Returns:
          ``self``, for chaining.
        """
        lam = self._host_lam()
        if lam.ndim != 1 or lam.size < 2:
            raise ScheduleError(f"a schedule needs at least one step (2 points), got shape {lam.shape}")
        if np.any(np.isnan(lam)):
            raise ScheduleError("the schedule's times contain NaN")
        if not np.isposinf(lam[-1]):
            raise ScheduleError(f"a schedule must end at clean data (lambda = +inf), it ends at {lam[-1]!r}")
        d = np.diff(lam)
        if np.any(~(d > 0)):
            i = int(np.argmax(~(d > 0)))
            raise ScheduleError(
                f"times must be strictly increasing in half-log-SNR (noise -> data): point {i + 1} "
                f"(lambda {lam[i + 1]!r}) is not after point {i} ({lam[i]!r})"
            )
        if self.meta.indices is not None:
            _check_indices(np.asarray(self.meta.indices), self.meta.K)
        ns = self.meta.noise_schedule
        if ns is not None:
            lo, hi = ns.lam_range
            inner = lam[:-1]
            if np.any(inner < lo - LAM_TOL) or np.any(inner > hi + LAM_TOL) or (np.isneginf(inner).any() and lo > -np.inf):
                raise ScheduleError(
                    f"points must lie in the noise process's range lambda in [{lo:.6g}, {hi:.6g}], "
                    f"got [{inner.min():.6g}, {inner.max():.6g}]"
                )
        if noise_schedule is not None:
            self._check_belongs(noise_schedule)
        return self

    def _check_belongs(self, ns: NoiseSchedule) -> None:
        m = self.meta
        if m.indices is not None:
            if ns.fingerprint != m.grid_fingerprint:
                raise ScheduleError(
                    f"this schedule was made for grid {m.grid_fingerprint} (K={m.K}, T={m.T}), "
                    f"not for grid {ns.fingerprint} (K={ns.K}, T={ns.num_train_timesteps})"
                )
            want = np.append(ns.log_snr[np.asarray(m.indices)[:-1]], np.inf)
            if not np.array_equal(want, self._host_lam()):
                raise ScheduleError("the schedule's times do not match the grid at its indices")
        elif m.noise_schedule is not None and m.noise_schedule.process != ns.process:
            raise ScheduleError(f"this schedule was made for noise process {m.noise_schedule.describe()}, not for {ns.describe()}")

    def on(self, noise_schedule: NoiseSchedule) -> "Schedule":
        """This schedule, checked against ``noise_schedule`` and attached to it (for a file
        loaded without one)."""
        if self.meta.noise_schedule is None:
            if self.meta.grid_fingerprint != noise_schedule.fingerprint:
                raise ScheduleError(
                    f"this schedule was made for grid {self.meta.grid_fingerprint} (K={self.meta.K}, T={self.meta.T}), "
                    f"not for grid {noise_schedule.fingerprint} (K={noise_schedule.K}, T={noise_schedule.num_train_timesteps})"
                )
            meta = dataclasses.replace(self.meta, noise_schedule=noise_schedule, host=_host(noise_schedule, self.lam))
            return Schedule(self.lam, meta).validate(noise_schedule)
        return self.validate(noise_schedule)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        m = self.meta
        ns = self.noise_schedule
        out = {
            "format": FORMAT,
            "version": VERSION,
            "method": m.method,
            "nfe": self.nfe,
            "noise_process": ns.spec(),
            "grid": {"K": m.K, "N": m.T, "fingerprint": m.grid_fingerprint, "origin": ns.origin},
            "log_snr": [_num(v) for v in self._host_lam()],
            "model_times": [float(v) for v in self.model_times],
            "indices": None if m.indices is None else list(m.indices),
            "tau": m.tau,
            "info": m.info,
        }
        return out

    def save(self, path) -> Path:
        """Writes readable JSON (atomically: temporary file, then rename)."""
        return write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict, noise_schedule: NoiseSchedule | None = None, *, source: str = "schedule") -> "Schedule":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ScheduleError(f"{source}: not an rbe_jax schedule (missing 'format': {FORMAT!r})")
        version = d.get("version")
        if version not in (1, VERSION):
            raise ScheduleError(f"{source}: unsupported schedule version {version!r}")
        try:
            sched = (_from_v1 if version == 1 else _from_v2)(cls, d, noise_schedule)
            if noise_schedule is not None:
                sched = sched.on(noise_schedule)
            sched = sched.validate()
            if version == VERSION and d.get("model_times") is not None and sched.meta.noise_schedule is not None:
                _check_model_times(d["model_times"], sched)
            return sched
        except ScheduleError as e:
            raise ScheduleError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path, noise_schedule: NoiseSchedule | None = None) -> "Schedule":
        """Reads and validates a schedule written by :meth:`save` (or by an earlier version).

        Args:
          path: the JSON file.
          noise_schedule: the noise schedule to check it against (its grid for a schedule
            on a grid, else its process).  Needed to sample with a schedule whose process
            the file cannot rebuild (a custom table, a version-1 file).
        Raises:
          FileNotFoundError, ScheduleError: naming the path and the problem.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"schedule file not found: {path}")
        return cls.from_dict(read_json(path, ScheduleError), noise_schedule, source=str(path))


def _num(v: float):
    """A float for JSON: infinities as the strings ``"inf"`` / ``"-inf"`` (JSON has none)."""
    return float(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf")


def _missing(d: dict, required) -> None:
    missing = [k for k in required if k not in d]
    if missing:
        raise ScheduleError(f"missing fields {missing}")


def _from_v1(cls, d: dict, ns: NoiseSchedule | None) -> "Schedule":
    """A version-1 file (integer grid indices, timesteps and alpha-bar)."""
    _missing(d, ("method", "K", "T", "grid_fingerprint", "indices", "timesteps", "alpha_bar"))
    try:
        idx = np.asarray(d["indices"], dtype=np.int64)
        ab = np.asarray(d["alpha_bar"], dtype=np.float64)
        K, T, fp = int(d["K"]), int(d["T"]), str(d["grid_fingerprint"])
        tau = _file_tau(d)
        info = dict(d.get("info") or {})
    except (TypeError, ValueError) as e:
        raise ScheduleError(f"malformed field: {e}") from None
    if "nfe" in d and int(d["nfe"]) != idx.size - 1:
        raise ScheduleError(f"'nfe' is {d['nfe']} but indices describe {idx.size - 1} steps")
    _check_indices(idx, K)
    if ab.shape != idx.shape or ab[-1] != 1.0 or np.any(np.diff(ab) <= 0) or np.any(ab <= 0):
        raise ScheduleError("alpha_bar must be positive, strictly increasing and end at 1 (clean data)")
    with np.errstate(divide="ignore"):
        lam = 0.5 * (np.log(ab) - np.log1p(-ab))
    meta = ScheduleMeta(method=str(d["method"]), noise_schedule=None, K=K, T=T, grid_fingerprint=fp, indices=tuple(int(i) for i in idx), tau=tau, info_json=_info_json(info))
    sched = cls(lam, meta)
    if ns is not None and ns.fingerprint == fp:
        want = ns.alpha_bar_ext[idx + 1]
        if not np.allclose(ab, want, rtol=1e-9, atol=0):
            raise ScheduleError("alpha_bar does not match the grid at the schedule's indices")
        lam = np.append(ns.log_snr[idx[:-1]], np.inf)
        sched = Schedule(lam, dataclasses.replace(meta, noise_schedule=ns, host=_host(ns, lam)))
    return sched


def _from_v2(cls, d: dict, ns: NoiseSchedule | None) -> "Schedule":
    _missing(d, ("method", "noise_process", "grid", "log_snr"))
    try:
        lam = np.asarray([float(v) for v in d["log_snr"]], np.float64)
        g = d["grid"]
        K, T, fp = int(g["K"]), int(g["N"]), str(g["fingerprint"])
        idx = None if d.get("indices") is None else tuple(int(i) for i in d["indices"])
        tau = _file_tau(d)
        info = dict(d.get("info") or {})
    except (TypeError, ValueError, KeyError) as e:
        raise ScheduleError(f"malformed field: {e}") from None
    if "nfe" in d and int(d["nfe"]) != lam.size - 1:
        raise ScheduleError(f"'nfe' is {d['nfe']} but log_snr describes {lam.size - 1} steps")
    own = None
    if ns is not None and g.get("origin") is None:  # a process the file cannot rebuild: the caller's, if it is the same
        if ns.spec() != d["noise_process"]:
            raise ScheduleError(f"this schedule was made for noise process {d['noise_process']}, not for {ns.describe()}")
        if idx is not None and ns.fingerprint != fp:
            raise ScheduleError(f"this schedule was made for grid {fp} (K={K}, N={T}), not for grid {ns.fingerprint} (K={ns.K}, N={ns.num_train_timesteps})")
        own = ns
    if g.get("origin"):
        from .noise import noise_schedule_from_origin

        try:
            own = noise_schedule_from_origin(g["origin"])
        except (TypeError, ValueError, KeyError) as e:
            raise ScheduleError(f"malformed grid origin {g['origin']!r}: {e}") from None
        if own.fingerprint != fp:
            raise ScheduleError(f"the grid rebuilt from {g['origin']} has fingerprint {own.fingerprint}, the file says {fp}")
    meta = ScheduleMeta(method=str(d["method"]), noise_schedule=own, K=K, T=T, grid_fingerprint=fp, indices=idx, tau=tau, info_json=_info_json(info), host=_host(own, lam))
    return cls(lam, meta)


def _check_model_times(recorded, sched: "Schedule") -> None:
    """A file's ``model_times`` are derived from its ``log_snr``: an edited copy that no
    longer matches is named (sampling follows ``log_snr``), not silently ignored."""
    try:
        t = np.asarray([float(v) for v in recorded], np.float64)
    except (TypeError, ValueError) as e:
        raise ScheduleError(f"malformed field 'model_times': {e}") from None
    want = sched.model_times
    if t.shape != want.shape:
        raise ScheduleError(f"'model_times' has {t.size} entries, but log_snr describes {want.size} model evaluations")
    bad = np.flatnonzero(~np.isclose(t, want, rtol=1e-6, atol=1e-9))
    if bad.size:
        i = int(bad[0])
        raise ScheduleError(
            f"'model_times'[{i}] is {float(t[i])!r}, but log_snr[{i}] gives model time {float(want[i])!r} ({bad.size} entries differ): "
            "the sampler follows log_snr; to move a point, make the schedule with Schedule.from_times and save it"
        )


def _check_ns(ns, what: str = "noise_schedule") -> None:
    if not isinstance(ns, NoiseSchedule):
        raise TypeError(f"{what} must be a NoiseSchedule, got {type(ns).__name__}")


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


def _file_tau(d: dict) -> float | None:
    """A schedule file's RBE threshold: absent, or a finite number > 0."""
    if d.get("tau") is None:
        return None
    tau = float(d["tau"])
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a finite number > 0, got {tau}")
    return tau


def check_nfe(nfe, upper: int | None = None, what: str = "nfe") -> int:
    """Validates ``1 <= nfe (<= upper)`` for an integer ``nfe``; returns it as int."""
    if isinstance(nfe, bool) or not isinstance(nfe, (int, np.integer)):
        raise TypeError(f"{what} must be an integer, got {type(nfe).__name__}")
    if int(nfe) < 1 or (upper is not None and int(nfe) > upper):
        bound = f"1 <= {what} <= {upper}" if upper is not None else f"{what} >= 1"
        raise ValueError(f"{what} must satisfy {bound}, got {nfe}")
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


def grid_indices(grid: NoiseSchedule, lam) -> np.ndarray:
    """The grid points nearest (in half-log-SNR) to a schedule's points ``lam`` ``(m + 1,)``,
    made strictly decreasing; the clean end maps to ``-1``."""
    lam = np.asarray(lam, np.float64)
    glam = grid.log_snr  # decreasing with the index
    pos = np.empty(lam.size - 1)
    for i, v in enumerate(lam[:-1]):
        if np.isneginf(v):
            pos[i] = grid.K - 1
        else:
            d = np.abs(np.where(np.isfinite(glam), glam, -np.inf) - v)
            pos[i] = int(np.argmin(d))
    return strictly_decreasing_path(np.append(pos, -1.0), grid.K)


def grid_schedule(grid: NoiseSchedule, nfe: int, power: float = 1.0, method: str = "uniform") -> Schedule:
    """``nfe`` steps on grid points ``(K - 1)(1 - i / nfe)^power`` (rounded, kept strictly
    decreasing), the last replaced by clean data: the uniform (``power=1``) index spacing of
    the accurate solves and the power family of the discrete searches."""
    nfe = check_nfe(nfe, grid.K)
    idx = strictly_decreasing_path((grid.K - 1) * (1.0 - np.arange(nfe + 1) / nfe) ** power, grid.K)
    return Schedule.from_indices(grid, idx, method=method)


# ------------------------------------------------------------------------------ baselines
def _time_ends(ns: NoiseSchedule) -> tuple[float, float]:
    """The model's time at the noisiest and at the least noisy trained point."""
    lo, hi = ns.lam_range
    return float(ns.model_time(np.asarray(lo))), float(ns.model_time(np.asarray(hi)))


def _uniform(ns: NoiseSchedule, nfe: int, **_) -> np.ndarray:
    t_hi, t_lo = _time_ends(ns)
    return ns.lam_of_time(t_hi + (t_lo - t_hi) * np.arange(nfe) / nfe)


def _quadratic(ns: NoiseSchedule, nfe: int, **_) -> np.ndarray:
    t_hi, t_lo = _time_ends(ns)
    return ns.lam_of_time(t_lo + (t_hi - t_lo) * (1.0 - np.arange(nfe) / nfe) ** 2)


def _finite_start(ns: NoiseSchedule, kind: str) -> float:
    lo = ns.lam_range[0]
    if not math.isfinite(lo):
        others = "'uniform', 'quadratic' or 'shift'" if ns.family == "flow" else "'uniform' or 'quadratic'"
        raise ValueError(f"the {kind!r} spacing needs a finite noisiest point; this process starts at pure noise (use {others})")
    return lo


def _logsnr(ns: NoiseSchedule, nfe: int, **_) -> np.ndarray:
    lo, hi = _finite_start(ns, "logsnr"), ns.lam_range[1]
    return lo + (hi - lo) * np.arange(nfe) / nfe


def _karras(ns: NoiseSchedule, nfe: int, rho: float = 7.0, **_) -> np.ndarray:
    # EDM: sigma = exp(-lambda), evenly in sigma^(1/rho) from sigma_max to sigma_min, both included
    smax, smin = math.exp(-_finite_start(ns, "karras")), math.exp(-ns.lam_range[1])
    u = np.arange(nfe) / max(nfe - 1, 1)
    sig = (smax ** (1 / rho) + u * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    return -np.log(sig)


def _shift(ns: NoiseSchedule, nfe: int, shift: float = 3.0, **_) -> np.ndarray:
    # SD3's and Flux's pipelines: t = linspace(1, 1 / nfe, nfe), then t' = shift t / (1 + (shift - 1) t),
    # then clean data (no evaluation spent next to t = 0)
    if ns.family != "flow":
        raise ValueError(f"the 'shift' spacing is for flow models; this noise schedule is {ns.family}")
    t = 1.0 - np.arange(nfe) / nfe
    t = np.maximum(shift * t / (1.0 + (shift - 1.0) * t), ns.process.t_min)
    with np.errstate(divide="ignore"):
        return np.log1p(-t) - np.log(t)


BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "uniform": _uniform,
    "quadratic": _quadratic,
    "logsnr": _logsnr,
    "karras": _karras,
    "shift": _shift,
}


def valid_baselines(noise_schedule: NoiseSchedule) -> tuple[str, ...]:
    """The :data:`BASELINES` kinds that apply to ``noise_schedule``'s process (``logsnr`` and
    ``karras`` need a finite noisiest point, ``shift`` a flow model)."""
    kinds = []
    for kind in BASELINES:
        try:
            BASELINES[kind](noise_schedule, 1)
        except ValueError:
            continue
        kinds.append(kind)
    return tuple(kinds)


def default_spacing(noise_schedule: NoiseSchedule) -> str:
    """The fixed spacing :func:`baseline_schedule` uses when no ``kind`` is given: ``"karras"``
    for VE and EDM processes (sigma spans four or more decades there: evenly in the model's
    time wastes most steps at high noise), ``"uniform"`` for VP tables, continuous VP and
    flow models (DDIM's and the Euler flow sampler's spacing)."""
    _check_ns(noise_schedule)
    return "karras" if noise_schedule.family in ("ve", "edm") else "uniform"


def baseline_schedule(noise_schedule: NoiseSchedule, nfe: int, kind: str | None = None, *, rho: float = 7.0, shift: float = 3.0) -> Schedule:
    """A standard fixed schedule of ``nfe`` steps, placed in continuous time.

    ``uniform``, ``quadratic`` and ``logsnr`` place ``nfe + 1`` points from the process's
    noisiest to its least noisy trained point and replace the last by clean data (DDIM's and
    DPM-Solver's convention: no evaluation is spent on a vanishing step); ``karras`` places
    ``nfe`` points with both ends included, then clean data (EDM's convention); ``shift``
    places ``t = 1, 1 - 1/nfe, ..., 1/nfe``, shifted, then clean data (SD3's and Flux's):

    - ``uniform``: evenly in the model's own time (DDIM's uniform timesteps; Euler in ``t``
      for flow);
    - ``quadratic``: ``t_min + (t_max - t_min)(1 - i / nfe)^2`` in the model's time (DDIM);
    - ``logsnr``: evenly in half-log-SNR (DPM-Solver);
    - ``karras``: EDM's spacing, evenly in ``sigma^(1/rho)`` with ``sigma = exp(-lambda)``;
    - ``shift``: flow models, ``t`` evenly from 1 to ``t_min``, then SD3's time shift
      ``t' = shift t / (1 + (shift - 1) t)``.

    Args:
      noise_schedule: the model's noise schedule (any grid of it: the points are placed on
        the process, not the grid).
      nfe: number of steps, ``>= 1``.
      kind: one of :data:`BASELINES`; default :func:`default_spacing` (``karras`` for VE
        and EDM, ``uniform`` otherwise).
      rho: ``karras``'s exponent; shift: ``shift``'s factor.
    Returns:
      A validated :class:`Schedule` with ``method=kind`` (the spacing used).
    """
    _check_ns(noise_schedule)
    kind = default_spacing(noise_schedule) if kind is None else kind
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline schedule kind {kind!r}; choose one of {sorted(BASELINES)}")
    nfe = check_nfe(nfe)
    if not (math.isfinite(rho) and rho > 0) or not (math.isfinite(shift) and shift > 0):
        raise ValueError(f"rho and shift must be finite numbers > 0, got rho={rho}, shift={shift}")
    lam = BASELINES[kind](noise_schedule, nfe, rho=rho, shift=shift)
    info = {"rho": rho} if kind == "karras" else {"shift": shift} if kind == "shift" else {}
    return Schedule.from_lambdas(noise_schedule, np.append(lam, np.inf), method=kind, info=info)


# ------------------------------------------------------------------------------ sampling tables
def schedule_points(schedule: Schedule, dtype) -> Point:
    """The :class:`Point` of every point of ``schedule`` (``(m + 1,)`` each), cast once to
    ``dtype``.

    Concrete times: computed on the host in float64.  Traced times (under ``jax.jit`` or
    ``jax.grad``): computed in the trace, so that gradients flow to them; where they still
    equal the times the schedule was made with, the forward values are that schedule's
    float64 tables (:attr:`ScheduleMeta.host`), so a jitted sampler gives an eager call's
    numbers.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be an rbe_jax.Schedule, got {type(schedule).__name__}")
    ns = schedule.noise_schedule
    if not isinstance(schedule.lam, jax.core.Tracer):
        host = ns.points(np.asarray(schedule.lam, np.float64))
        return Point(*(np.asarray(v, np.dtype(dtype)) for v in host))  # jit transfers them in its fast path
    lam = jnp.asarray(schedule.lam, dtype)
    traced = Point(*(jnp.asarray(v, dtype) for v in ns.points(lam, jnp)))
    host = schedule.meta.host
    if host is None or len(host[0]) != lam.shape[0]:
        return traced
    same = lam == jnp.asarray(host[0], dtype)

    def pick(h, f):  # the host value, with the traced value's derivative
        h = jnp.asarray(h, dtype)
        exact = h + jnp.where(jnp.isfinite(f), f - jax.lax.stop_gradient(f), 0.0)
        return jnp.where(same, exact, f)

    return Point(*(pick(h, f) for h, f in zip(host[1:], traced)))
