"""Noise processes of every Gaussian diffusion family, and the grids that searches use.

Every family noises data as ``x_t = alpha(t) x0 + sigma(t) eps``; they differ in how
``alpha`` and ``sigma`` depend on the model's own time ``t`` and in how ``x`` is scaled.  Inside
rbe_jax one time variable serves them all: the half-log-SNR ``lam = log(alpha / sigma)``
(``-inf`` is pure noise, ``+inf`` clean data), and samples are carried in the
variance-preserving ("VP") scaling ``x_vp = x / sqrt(alpha^2 + sigma^2)``, where
``alpha_vp = sqrt(sigmoid(2 lam))`` and ``sigma_vp = sqrt(sigmoid(-2 lam))`` are the same
functions of ``lam`` for every family.  A family is then only an adapter at the boundary:
how ``lam`` maps to the model's time input, how the model's ``x`` is scaled, and how the
start noise is scaled (:meth:`NoiseSchedule.prior_std`).

A :class:`NoiseSchedule` is host-side configuration: a continuous-time process plus a grid of
``K`` of its points (index ``0`` the least noisy), which the discrete searches (RBE's
snapping, the dynamic programs, ``optimize_schedule``) step on.  Constructors:

- discrete VP tables: :meth:`~NoiseSchedule.linear`, :meth:`~NoiseSchedule.cosine`,
  :meth:`~NoiseSchedule.from_alpha_bar`, :meth:`~NoiseSchedule.from_betas` (the model is fed
  the training timestep; between entries ``log sigma`` is interpolated linearly in the
  timestep, as k-diffusion and diffusers do, and a zero-terminal-SNR last entry is allowed);
- :meth:`~NoiseSchedule.vp_continuous` (score_sde VP, model fed ``t``);
- :meth:`~NoiseSchedule.ve` (score_sde VE, model fed ``t`` in ``[0, 1]``);
- :meth:`~NoiseSchedule.edm` (Karras et al., model fed ``sigma``);
- :meth:`~NoiseSchedule.flow` (rectified flow ``x_t = (1 - t) x0 + t eps``, model fed
  ``time_scale * t``; ``t = 1`` is pure noise).

``respace(K)`` keeps the process and takes ``K`` evenly spaced points of the grid.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from typing import Any, NamedTuple

import numpy as np

__all__ = ["NoiseSchedule", "Point", "FAMILIES", "noise_schedule_from_origin"]

FAMILIES = ("vp", "ve", "edm", "flow")


class Point(NamedTuple):
    """Where a model is evaluated: per-point values, scalars or ``(B,)`` arrays.

    Attributes:
      lam: half-log-SNR ``log(alpha / sigma)``.
      alpha, sigma: ``sqrt(sigmoid(2 lam))``, ``sqrt(sigmoid(-2 lam))`` (VP scaling).
      t: the model's own time input (training timestep, ``t``, ``sigma``, ...).
      scale: ``sqrt(alpha_f^2 + sigma_f^2)`` of the family's own scaling: the model is fed
        ``x_vp * scale`` (1 for VP models).
    """

    lam: Any
    alpha: Any
    sigma: Any
    t: Any
    scale: Any


def _np(xp) -> bool:
    return xp is np


def _table(values, like, xp):
    """A host table as an array of ``like``'s floating dtype (float64 on the host)."""
    dtype = np.float64 if xp is np else xp.result_type(like, np.float32)
    return xp.asarray(np.asarray(values, np.float64), dtype=dtype)


def log_alpha_sigma(lam, xp=np):
    """``(log alpha_vp, log sigma_vp)`` of ``lam``, finite at ``lam = -inf`` / ``+inf`` for
    the one that is not zero there."""
    return -0.5 * xp.logaddexp(0.0, -2.0 * lam), -0.5 * xp.logaddexp(0.0, 2.0 * lam)


# ----------------------------------------------------------------------------------- processes
class _Process:
    """A continuous-time noise process: ``lam`` to the model's time and back, the family's
    scaling, and the range of ``lam`` the model was trained on.  Subclasses are frozen
    dataclasses compared by value."""

    family: str = "vp"

    @property
    def lam_range(self) -> tuple[float, float]:
        """``(lam_min, lam_max)``: the noisiest and the least noisy trained point."""
        raise NotImplementedError

    def lam_to_time(self, lam, xp=np):
        raise NotImplementedError

    def time_to_lam(self, t, xp=np):
        raise NotImplementedError

    def velocity_coeffs(self, t, xp=np):
        """``(d alpha_f / dt, d sigma_f / dt)`` at model time ``t``, for models that predict
        the velocity ``d x_t / dt``; ``None`` when the process has no derivative."""
        return None

    @property
    def has_velocity(self) -> bool:
        """Whether a model of this process may predict the velocity (a time derivative exists)."""
        return self.velocity_coeffs(np.asarray(0.5)) is not None

    def scale(self, lam, xp=np):
        """``sqrt(alpha_f^2 + sigma_f^2)`` as a function of ``lam`` (see :class:`Point`)."""
        la, ls = log_alpha_sigma(lam, xp)
        if self.family == "vp":
            return xp.ones_like(lam)
        if self.family in ("ve", "edm"):  # alpha_f = 1
            return xp.exp(-la)
        return 1.0 / (xp.exp(la) + xp.exp(ls))  # flow: alpha_f + sigma_f = 1

    def spec(self) -> dict:
        raise NotImplementedError

    def default_grid(self, N: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``(lam, times)`` of an ``N``-point grid, index 0 the least noisy."""
        raise NotImplementedError

    @functools.cached_property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()[:16]

    def __eq__(self, other):
        return isinstance(other, _Process) and self.fingerprint == other.fingerprint

    def __hash__(self):
        return hash(self.fingerprint)

    def model_time(self, lam, xp=np):
        """The model's time input at ``lam`` (clipped to the trained range)."""
        lo, hi = self.lam_range
        return self.lam_to_time(xp.clip(lam, lo, hi), xp)

    def prior_std(self, lam0, xp=np):
        """See :meth:`NoiseSchedule.prior_std`."""
        if self.family == "vp":
            return xp.ones_like(lam0)
        return xp.exp(log_alpha_sigma(lam0, xp)[1])

    def start(self, noise, sigma0):
        """The sampler's first state ``x_vp`` from standard-normal ``noise`` at a point whose
        VP sigma is ``sigma0`` (:meth:`prior_std`'s rule), in the noise's dtype: the noise itself
        for VP models, ``sigma0 * noise`` otherwise."""
        return noise if self.family == "vp" else (noise * sigma0).astype(noise.dtype)

    def points(self, lam, xp=np) -> Point:
        """The :class:`Point` of each ``lam`` (NumPy float64 on the host with ``xp=np``, or
        traced with ``xp=jax.numpy``)."""
        lam = xp.asarray(lam)
        la, ls = log_alpha_sigma(lam, xp)
        return Point(lam=lam, alpha=xp.exp(la), sigma=xp.exp(ls), t=self.model_time(lam, xp), scale=self.scale(lam, xp))


@dataclasses.dataclass(frozen=True, eq=False)
class _TableProcess(_Process):
    """A discrete VP table: entry ``i`` (training timestep ``i``) has half-log-SNR ``lam[i]``;
    between entries ``lam`` is linear in the timestep (``log sigma``, k-diffusion's
    ``DiscreteSchedule``), and a zero-terminal-SNR last entry (``lam = -inf``) is reached
    linearly in ``alpha`` from the entry before it."""

    alpha_bar: np.ndarray  # (T,) the training table, decreasing
    family = "vp"

    @functools.cached_property
    def lam(self) -> np.ndarray:
        a = self.alpha_bar
        with np.errstate(divide="ignore"):
            return 0.5 * (np.log(a) - np.log1p(-a))

    @property
    def T(self) -> int:
        return int(self.alpha_bar.size)

    @property
    def zero_terminal(self) -> bool:
        return bool(self.alpha_bar[-1] == 0.0)

    @property
    def lam_range(self):
        return float(self.lam[-1]), float(self.lam[0])

    def _finite(self):
        """The finite part of the table (all of it unless zero-terminal)."""
        return self.lam[:-1] if self.zero_terminal else self.lam

    def lam_to_time(self, lam, xp=np):
        fin = self._finite()
        n = fin.size
        # lam decreases with t: interpolate on the reversed (increasing) table
        t = xp.interp(lam, _table(fin[::-1], lam, xp), _table(np.arange(n - 1, -1, -1), lam, xp))
        if self.zero_terminal:  # between the last finite entry and pure noise: linear in alpha
            la, _ = log_alpha_sigma(xp.minimum(lam, fin[-1]), xp)
            a_last = math.sqrt(self.alpha_bar[-2])
            t_tail = (n - 1) + (1.0 - xp.exp(la) / a_last)
            t = xp.where(lam < fin[-1], t_tail, t)
        return t

    def time_to_lam(self, t, xp=np):
        fin = self._finite()
        n = fin.size
        lam = xp.interp(t, _table(np.arange(n), t, xp), _table(fin, t, xp))
        if self.zero_terminal:
            a = math.sqrt(self.alpha_bar[-2]) * (1.0 - (xp.minimum(t, float(n)) - (n - 1)))
            a = xp.clip(a, 0.0, 1.0)
            with np.errstate(divide="ignore"):
                lam_tail = xp.log(a) - 0.5 * xp.log1p(-a * a)
            lam = xp.where(t > n - 1, lam_tail, lam)
        return lam

    def spec(self) -> dict:
        h = hashlib.sha256(np.array([float(f"{v:.12g}") for v in self.alpha_bar], "<f8").tobytes()).hexdigest()[:16]
        return {"kind": "table", "T": self.T, "alpha_bar_sha": h}

    def default_grid(self, N):
        return self.lam, None

    def points(self, lam, xp=np) -> Point:
        """As :meth:`_Process.points`; on the host, points that lie exactly on a table entry
        take the table's own values (bit-for-bit those of the integer-grid sampler)."""
        p = super().points(lam, xp)
        if not _np(xp):
            return p
        lam = p.lam
        pos = np.minimum(np.searchsorted(-self.lam, -lam), self.T - 1)  # self.lam decreases
        hit = self.lam[pos] == lam
        alpha, sigma = np.sqrt(self.alpha_bar[pos]), np.sqrt(np.maximum(1.0 - self.alpha_bar[pos], 0.0))
        with np.errstate(divide="ignore"):
            lam_tab = np.log(alpha) - np.log(sigma)  # as the integer-grid sampler computed it
        return p._replace(
            lam=np.where(hit, lam_tab, lam),
            alpha=np.where(hit, alpha, p.alpha),
            sigma=np.where(hit, sigma, p.sigma),
            t=np.where(hit, pos.astype(np.float64), p.t),
        )


class _VPContinuous(_Process):
    """A continuous-time VP process given by ``log alpha(t)`` and its derivative on ``[t_min,
    t_max]`` (``alpha^2 + sigma^2 = 1``); subclasses define ``_log_alpha``, ``_dlog_alpha``,
    ``lam_to_time`` and ``spec``."""

    family = "vp"

    def time_to_lam(self, t, xp=np):
        la = self._log_alpha(t, xp)
        return la - 0.5 * xp.log(-xp.expm1(2.0 * la))

    def velocity_coeffs(self, t, xp=np):
        la = self._log_alpha(t, xp)
        a = xp.exp(la)
        da = a * self._dlog_alpha(t, xp)
        return da, -a * da / xp.sqrt(-xp.expm1(2.0 * la))

    @property
    def lam_range(self):
        return float(self.time_to_lam(self.t_max)), float(self.time_to_lam(self.t_min))

    def default_grid(self, N):
        t = self.t_min + (self.t_max - self.t_min) * np.arange(N) / (N - 1)
        return self.time_to_lam(t), t


@dataclasses.dataclass(frozen=True, eq=False)
class _VPLinear(_VPContinuous):
    """score_sde's VP SDE: ``log alpha(t) = -(beta_max - beta_min) t^2 / 4 - beta_min t / 2``."""

    beta_min: float
    beta_max: float
    t_min: float
    t_max: float

    def _log_alpha(self, t, xp):
        return -0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def _dlog_alpha(self, t, xp):
        return -0.5 * t * (self.beta_max - self.beta_min) - 0.5 * self.beta_min

    def lam_to_time(self, lam, xp=np):
        # DPM-Solver's inverse_lambda, written to stay accurate for small t
        tmp = 2.0 * (self.beta_max - self.beta_min) * xp.logaddexp(-2.0 * lam, 0.0)
        delta = self.beta_min**2 + tmp
        return tmp / (xp.sqrt(delta) + self.beta_min) / (self.beta_max - self.beta_min)

    def spec(self):
        return {"kind": "vp_linear", "beta_min": self.beta_min, "beta_max": self.beta_max, "t_min": self.t_min, "t_max": self.t_max}


@dataclasses.dataclass(frozen=True, eq=False)
class _VPCosine(_VPContinuous):
    """Improved DDPM's cosine schedule in continuous time:
    ``alpha(t) = cos((t + s)/(1 + s) pi/2) / cos(s/(1 + s) pi/2)``."""

    s: float
    t_min: float
    t_max: float

    def _log_alpha(self, t, xp):
        f0 = math.log(math.cos(self.s / (1.0 + self.s) * math.pi / 2.0))
        return xp.log(xp.cos((t + self.s) / (1.0 + self.s) * math.pi / 2.0)) - f0

    def _dlog_alpha(self, t, xp):
        return -xp.tan((t + self.s) / (1.0 + self.s) * math.pi / 2.0) * math.pi / (2.0 * (1.0 + self.s))

    def lam_to_time(self, lam, xp=np):
        la, _ = log_alpha_sigma(lam, xp)
        f0 = math.log(math.cos(self.s / (1.0 + self.s) * math.pi / 2.0))
        return 2.0 * (1.0 + self.s) / math.pi * xp.arccos(xp.exp(la + f0)) - self.s

    def spec(self):
        return {"kind": "vp_cosine", "s": self.s, "t_min": self.t_min, "t_max": self.t_max}


@dataclasses.dataclass(frozen=True, eq=False)
class _VE(_Process):
    """score_sde's VE SDE: ``alpha = 1``, ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``;
    the model is fed ``t`` in ``[0, 1]`` (``time_input="sigma"``: ``sigma``)."""

    sigma_min: float
    sigma_max: float
    time_input: str
    family = "ve"

    def _log_ratio(self):
        return math.log(self.sigma_max / self.sigma_min)

    def lam_to_time(self, lam, xp=np):
        if self.time_input == "sigma":
            return xp.exp(-lam)
        return (-lam - math.log(self.sigma_min)) / self._log_ratio()

    def time_to_lam(self, t, xp=np):
        if self.time_input == "sigma":
            return -xp.log(t)
        return -(math.log(self.sigma_min) + t * self._log_ratio())

    def velocity_coeffs(self, t, xp=np):
        if self.time_input == "sigma":
            return xp.zeros_like(t), xp.ones_like(t)
        return xp.zeros_like(t), self.sigma_min * xp.exp(t * self._log_ratio()) * self._log_ratio()

    @property
    def lam_range(self):
        return -math.log(self.sigma_max), -math.log(self.sigma_min)

    def spec(self):
        return {"kind": "ve", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "time_input": self.time_input}

    def default_grid(self, N):
        t = np.arange(N) / (N - 1)
        lam = -(math.log(self.sigma_min) + t * self._log_ratio())
        return lam, self.lam_to_time(lam)


@dataclasses.dataclass(frozen=True, eq=False)
class _EDM(_Process):
    """EDM (Karras et al. 2022): ``alpha = 1``; the model (the denoiser ``D(x, sigma)``) is fed
    ``sigma = exp(-lam)``."""

    sigma_min: float
    sigma_max: float
    family = "edm"

    def lam_to_time(self, lam, xp=np):
        return xp.exp(-lam)

    def time_to_lam(self, t, xp=np):
        return -xp.log(t)

    def velocity_coeffs(self, t, xp=np):
        return xp.zeros_like(t), xp.ones_like(t)

    @property
    def lam_range(self):
        return -math.log(self.sigma_max), -math.log(self.sigma_min)

    def spec(self):
        return {"kind": "edm", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    def default_grid(self, N):
        lam = np.linspace(-math.log(self.sigma_min), -math.log(self.sigma_max), N)
        return lam, np.exp(-lam)


@dataclasses.dataclass(frozen=True, eq=False)
class _Flow(_Process):
    """Rectified flow / flow matching: ``x_t = (1 - t) x0 + t eps``, ``t = sigmoid(-lam)``;
    the model is fed ``time_scale * t`` (SD3 pipelines: 1000) and its velocity is
    ``d x_t / dt = eps - x0``."""

    t_min: float
    time_scale: float
    family = "flow"

    def lam_to_time(self, lam, xp=np):
        return self.time_scale * xp.exp(-xp.logaddexp(0.0, lam))

    def time_to_lam(self, t, xp=np):
        u = t / self.time_scale
        with np.errstate(divide="ignore"):
            return xp.log1p(-u) - xp.log(u)

    def velocity_coeffs(self, t, xp=np):
        # d/dt of alpha_f = 1 - t, sigma_f = t, per unit of t (not of time_scale * t)
        return -xp.ones_like(t), xp.ones_like(t)

    @property
    def lam_range(self):
        return -math.inf, math.log1p(-self.t_min) - math.log(self.t_min)

    def spec(self):
        return {"kind": "flow", "t_min": self.t_min, "time_scale": self.time_scale}

    def default_grid(self, N):
        t = self.t_min + (1.0 - self.t_min) * np.arange(N) / (N - 1)  # t_min .. 1 (1/N, 2/N, .. 1 by default)
        with np.errstate(divide="ignore"):
            lam = np.log1p(-t) - np.log(t)
        return lam, self.time_scale * t


# ----------------------------------------------------------------------------------- the grid
def _check_table(alpha_bar) -> np.ndarray:
    a = np.asarray(alpha_bar, dtype=np.float64)
    if a.ndim != 1 or a.size < 2:
        raise ValueError(f"alpha_bar must be a 1-D table with at least 2 entries, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("alpha_bar contains NaN or Inf")
    if np.any(a[:-1] <= 0.0) or a[-1] < 0.0 or np.any(a >= 1.0):
        raise ValueError(
            f"alpha_bar must lie inside (0, 1) (the last entry may be 0: zero terminal SNR), "
            f"got range [{a.min():.3g}, {a.max():.3g}]"
        )
    if np.any(np.diff(a) >= 0.0):
        bad = int(np.argmax(np.diff(a) >= 0.0))
        raise ValueError(
            f"alpha_bar must be strictly decreasing toward noise; entry {bad + 1} "
            f"({a[bad + 1]!r}) is not below entry {bad} ({a[bad]!r})"
        )
    return a


def _frozen(a, dtype) -> np.ndarray:
    a = np.array(a, dtype=dtype)
    a.setflags(write=False)
    return a


@dataclasses.dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """A noise process and a grid of ``K`` of its points (build one with a constructor).

    Attributes:
      process: the continuous-time process (private; see the module docstring).
      alpha_bar: ``(K,)`` float64 VP alpha-bar ``sigmoid(2 lam)`` of the grid points,
        strictly decreasing (index 0 the least noisy; the last may be 0, pure noise).
      timesteps: ``(K,)`` int64: each point's index in the process's full ``N``-point grid
        (for a discrete table: the training timestep).
      num_train_timesteps: ``N``, the length of the full grid (a table's ``T``).
      times: ``(K,)`` float64 model time of each grid point for a continuous process;
        ``None`` for a discrete table (its model time is ``timesteps``).
      origin: the constructor and its arguments (``{"kind": "linear", "T": 1000, ...}``, with
        ``"K"`` after :meth:`respace`), from which :func:`noise_schedule_from_origin` rebuilds
        it; ``None`` for a table given as numbers.

    Grid conventions of the discrete searches: grid point ``k`` has ``alpha_bar[k]``; the
    virtual point ``k = -1`` is clean data (``alpha_bar = 1``, ``lam = +inf``).
    """

    process: _Process
    alpha_bar: np.ndarray
    timesteps: np.ndarray
    num_train_timesteps: int
    times: np.ndarray | None = None
    origin: dict | None = None

    def __post_init__(self):
        a = _check_table(self.alpha_bar)
        t = np.asarray(self.timesteps)
        if t.shape != a.shape:
            raise ValueError(f"timesteps shape {t.shape} does not match alpha_bar shape {a.shape}")
        if not np.issubdtype(t.dtype, np.integer) and not np.all(t == np.round(t)):
            raise ValueError("timesteps must be integers")
        t = t.astype(np.int64)
        if np.any(np.diff(t) <= 0) or t[0] < 0 or t[-1] >= self.num_train_timesteps:
            raise ValueError(f"timesteps must be strictly increasing indices in [0, {self.num_train_timesteps - 1}]")
        object.__setattr__(self, "alpha_bar", _frozen(a, np.float64))
        object.__setattr__(self, "timesteps", _frozen(t, np.int64))
        object.__setattr__(self, "num_train_timesteps", int(self.num_train_timesteps))
        if self.times is not None:
            tc = np.asarray(self.times, dtype=np.float64)
            if tc.shape != a.shape:
                raise ValueError("times must match alpha_bar's shape")
            object.__setattr__(self, "times", _frozen(tc, np.float64))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def _on_grid(cls, process: _Process, N: int, origin: dict) -> "NoiseSchedule":
        lam, times = process.default_grid(N)
        with np.errstate(over="ignore"):
            abar = 1.0 / (1.0 + np.exp(-2.0 * np.asarray(lam, np.float64)))
        return cls(process=process, alpha_bar=abar, timesteps=np.arange(len(lam)), num_train_timesteps=len(lam), times=times, origin=origin)

    @classmethod
    def from_alpha_bar(cls, alpha_bar) -> "NoiseSchedule":
        """A discrete VP training table from its cumulative products ``alpha_bar`` ``(T,)``
        (strictly decreasing; the last entry may be 0 for zero terminal SNR, which needs a
        model that predicts ``v``, ``x0`` or the velocity)."""
        a = _check_table(alpha_bar)
        return cls(process=_TableProcess(alpha_bar=_frozen(a, np.float64)), alpha_bar=a, timesteps=np.arange(a.size), num_train_timesteps=a.size)

    @classmethod
    def from_betas(cls, betas) -> "NoiseSchedule":
        """A discrete VP training table from its per-step betas ``(T,)`` (each in (0, 1];
        a last beta of 1 gives zero terminal SNR)."""
        b = np.asarray(betas, dtype=np.float64)
        if b.ndim != 1 or b.size < 2:
            raise ValueError(f"betas must be a 1-D array with at least 2 entries, got shape {b.shape}")
        if not np.all(np.isfinite(b)) or np.any(b <= 0.0) or np.any(b[:-1] >= 1.0) or b[-1] > 1.0:
            raise ValueError("betas must be finite and inside (0, 1) (the last may be 1: zero terminal SNR)")
        return cls.from_alpha_bar(np.cumprod(1.0 - b))

    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        """DDPM's linear beta table (Ho et al. 2020)."""
        if T < 2:
            raise ValueError(f"T must be >= 2, got {T}")
        ns = cls.from_betas(np.linspace(beta_start, beta_end, T, dtype=np.float64))
        return dataclasses.replace(ns, origin={"kind": "linear", "T": int(T), "beta_start": float(beta_start), "beta_end": float(beta_end)})

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "NoiseSchedule":
        """Improved DDPM's cosine table (Nichol & Dhariwal 2021), betas capped at ``max_beta``."""
        if T < 2:
            raise ValueError(f"T must be >= 2, got {T}")
        f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2
        betas = [min(1.0 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)]
        ns = cls.from_betas(np.asarray(betas))
        return dataclasses.replace(ns, origin={"kind": "cosine", "T": int(T), "s": float(s), "max_beta": float(max_beta)})

    @classmethod
    def vp_continuous(
        cls,
        kind: str = "linear",
        N: int = 1000,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        s: float = 0.008,
        t_eps: float = 1e-3,
        t_max: float | None = None,
    ) -> "NoiseSchedule":
        """score_sde's continuous-time VP process; the model is fed ``t`` in ``[t_eps, t_max]``.

        ``kind="linear"``: ``log alpha_bar(t) = -(beta_min t + (beta_max - beta_min) t^2 / 2)``;
        ``kind="cosine"``: ``alpha_bar(t) = cos^2(((t + s)/(1 + s)) pi/2) / cos^2((s/(1 + s)) pi/2)``
        (``t_max`` defaults to 1, and to 0.9946 for cosine, DPM-Solver's choice).  The grid has
        ``N`` points evenly spaced in ``t``.
        """
        if t_max is None:
            t_max = 0.9946 if kind == "cosine" else 1.0
        if N < 2 or not 0.0 < t_eps < t_max <= 1.0:
            raise ValueError(f"need N >= 2 and 0 < t_eps < t_max <= 1, got N={N}, t_eps={t_eps}, t_max={t_max}")
        if kind == "linear":
            if not 0 <= beta_min < beta_max:
                raise ValueError(f"need 0 <= beta_min < beta_max, got {beta_min}, {beta_max}")
            proc = _VPLinear(float(beta_min), float(beta_max), float(t_eps), float(t_max))
            t = t_eps + (t_max - t_eps) * np.arange(N) / (N - 1)
            abar = np.exp(-(beta_min * t + 0.5 * (beta_max - beta_min) * t**2))
        elif kind == "cosine":
            proc = _VPCosine(float(s), float(t_eps), float(t_max))
            t = t_eps + (t_max - t_eps) * np.arange(N) / (N - 1)
            f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2
            abar = f(t) / f(0.0)
        else:
            raise ValueError(f"unknown continuous schedule kind {kind!r} (expected 'linear' or 'cosine')")
        origin = {"kind": "vp_continuous", "vp_kind": kind, "N": int(N), "beta_min": float(beta_min), "beta_max": float(beta_max), "s": float(s), "t_eps": float(t_eps), "t_max": float(t_max)}
        return cls(process=proc, alpha_bar=abar, timesteps=np.arange(N), num_train_timesteps=N, times=t, origin=origin)

    @classmethod
    def ve(cls, sigma_min: float = 0.01, sigma_max: float = 50.0, *, time_input: str = "t", N: int = 1000) -> "NoiseSchedule":
        """score_sde's VE process (NCSN++): ``alpha = 1``, ``sigma(t) = sigma_min
        (sigma_max / sigma_min)^t``, prior ``N(0, sigma_max^2 I)``.  The model is fed ``t`` in
        ``[0, 1]``, or ``sigma`` with ``time_input="sigma"``.  Grid: ``N`` points evenly
        spaced in ``t``."""
        if not 0.0 < sigma_min < sigma_max or not math.isfinite(sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}")
        if time_input not in ("t", "sigma"):
            raise ValueError(f"time_input must be 't' or 'sigma', got {time_input!r}")
        if N < 2:
            raise ValueError(f"N must be >= 2, got {N}")
        origin = {"kind": "ve", "sigma_min": float(sigma_min), "sigma_max": float(sigma_max), "time_input": time_input, "N": int(N)}
        return cls._on_grid(_VE(float(sigma_min), float(sigma_max), time_input), N, origin)

    @classmethod
    def edm(cls, sigma_min: float = 0.002, sigma_max: float = 80.0, *, N: int = 1000) -> "NoiseSchedule":
        """EDM (Karras et al. 2022): ``alpha = 1``, ``sigma`` in ``[sigma_min, sigma_max]``,
        prior ``N(0, sigma_max^2 I)``; the model (a denoiser ``D(x, sigma)``, prediction
        ``"x0"``) is fed ``sigma``.  Grid: ``N`` points evenly spaced in ``log sigma``."""
        if not 0.0 < sigma_min < sigma_max or not math.isfinite(sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}")
        if N < 2:
            raise ValueError(f"N must be >= 2, got {N}")
        origin = {"kind": "edm", "sigma_min": float(sigma_min), "sigma_max": float(sigma_max), "N": int(N)}
        return cls._on_grid(_EDM(float(sigma_min), float(sigma_max)), N, origin)

    @classmethod
    def flow(cls, *, time_scale: float = 1.0, t_min: float = 1e-3, N: int = 1000) -> "NoiseSchedule":
        """Rectified flow / flow matching: ``x_t = (1 - t) x0 + t eps``, ``t`` in ``[0, 1]``,
        ``t = 1`` pure noise (prior ``N(0, I)``); the model is fed ``time_scale * t`` (1000
        as SD3 and Flux pipelines do) and usually predicts the velocity ``eps - x0``.
        ``t_min`` is the least noisy time the fixed spacings place a point at.  Grid: ``t =
        1/N, 2/N, ..., 1``.  Models with the opposite orientation (``t = 0`` noise, velocity
        ``x0 - eps``) plug in with a one-line wrapper: ``lambda x, t: -net(x, 1 - t)``."""
        if not 0.0 < t_min < 1.0:
            raise ValueError(f"t_min must lie in (0, 1), got {t_min}")
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise ValueError(f"time_scale must be a finite number > 0, got {time_scale}")
        if N < 2:
            raise ValueError(f"N must be >= 2, got {N}")
        origin = {"kind": "flow", "time_scale": float(time_scale), "t_min": float(t_min), "N": int(N)}
        return cls._on_grid(_Flow(float(t_min), float(time_scale)), N, origin)

    # ------------------------------------------------------------------ grids
    def respace(self, K: int) -> "NoiseSchedule":
        """The same process on ``K`` evenly spaced points of this grid, first and last
        included (improved-diffusion's single-section ``space_timesteps``: stride
        ``(N - 1) / (K - 1)``, each position rounded)."""
        n = self.alpha_bar.size
        K = int(K)
        if not 2 <= K <= n:
            raise ValueError(f"respace needs 2 <= K <= {n} (the schedule's length), got K={K}")
        stride = (n - 1) / (K - 1)
        pos, taken = 0.0, []
        for _ in range(K):
            taken.append(round(pos))
            pos += stride
        idx = np.asarray(taken, dtype=np.int64)
        return dataclasses.replace(
            self,
            alpha_bar=self.alpha_bar[idx],
            timesteps=self.timesteps[idx],
            times=None if self.times is None else self.times[idx],
            origin=None if self.origin is None else {**self.origin, "K": K},
        )

    # ------------------------------------------------------------------ the process
    @property
    def family(self) -> str:
        """``"vp"``, ``"ve"``, ``"edm"`` or ``"flow"``: how the model's ``x`` is scaled."""
        return self.process.family

    @property
    def lam_range(self) -> tuple[float, float]:
        """``(lam_min, lam_max)`` of the process: its noisiest and least noisy trained points
        (``lam_min = -inf`` for pure noise: flow at ``t = 1``, zero-terminal-SNR tables)."""
        return self.process.lam_range

    @property
    def process_fingerprint(self) -> str:
        """A short hash of the process alone (equal for a table and its respaced grids)."""
        return self.process.fingerprint

    def spec(self) -> dict:
        """The process as JSON (its fingerprint's source)."""
        return self.process.spec()

    def describe(self) -> str:
        """A short description for messages: the constructor and its arguments when known."""
        d = dict(self.origin) if self.origin is not None else self.spec()
        kind = d.pop("kind")
        return f"{kind}({', '.join(f'{k}={v}' for k, v in d.items())})"

    def prior_std(self, lam0, xp=np):
        """How standard-normal noise ``z`` becomes the start ``x_vp`` at ``lam0``: ``x_vp =
        prior_std * z``.  VP models start from ``z`` itself (DDPM's convention); VE, EDM and flow
        from ``sigma_f(lam0) z`` in their own scaling (EDM's ``sigma_max z``), which is
        ``sigma_vp(lam0) z`` in the VP scaling."""
        return self.process.prior_std(lam0, xp)

    def model_time(self, lam, xp=np):
        """The model's time input at ``lam`` (clipped to the trained range)."""
        return self.process.model_time(lam, xp)

    def lam_of_time(self, t, xp=np):
        """``lam`` at the model's time input ``t``."""
        return self.process.time_to_lam(t, xp)

    def points(self, lam, xp=np) -> Point:
        """The :class:`Point` of each ``lam`` (NumPy float64 on the host with ``xp=np``, or
        traced with ``xp=jax.numpy``).  On the host, points that lie exactly on a table entry
        take the table's own values (bit-for-bit those of the integer-grid sampler)."""
        return self.process.points(lam, xp)

    # ------------------------------------------------------------------ grid helpers
    def __len__(self) -> int:
        return int(self.alpha_bar.size)

    @property
    def K(self) -> int:
        """Number of grid points."""
        return int(self.alpha_bar.size)

    @property
    def alpha(self) -> np.ndarray:
        """``sqrt(alpha_bar)`` of the grid points (VP scaling)."""
        return np.sqrt(self.alpha_bar)

    @property
    def sigma(self) -> np.ndarray:
        """``sqrt(1 - alpha_bar)`` of the grid points (VP scaling)."""
        return np.sqrt(1.0 - self.alpha_bar)

    @property
    def log_snr(self) -> np.ndarray:
        """Half-log-SNR ``lambda`` of the grid points; increases toward data (``-inf`` at a
        pure-noise point)."""
        with np.errstate(divide="ignore"):
            return 0.5 * (np.log(self.alpha_bar) - np.log1p(-self.alpha_bar))

    @property
    def alpha_bar_ext(self) -> np.ndarray:
        """``(K + 1,)``: ``[1, alpha_bar[0], ..., alpha_bar[K-1]]``, indexed by grid index + 1."""
        return np.concatenate([[1.0], self.alpha_bar])

    def grid_points(self) -> Point:
        """The :class:`Point` of every grid point ``(K,)``, float64 (the table's own values)."""
        model_t = self.timesteps.astype(np.float64) if self.times is None else self.times
        lam = self.log_snr
        return Point(lam=lam, alpha=self.alpha, sigma=self.sigma, t=model_t, scale=self.process.scale(lam))

    @functools.cached_property
    def fingerprint(self) -> str:
        """A short hash of the grid and its process."""
        h = hashlib.sha256()
        h.update(np.array([self.num_train_timesteps], dtype=np.int64).tobytes())
        h.update(self.timesteps.astype("<i8").tobytes())
        h.update(np.array([float(f"{v:.12g}") for v in self.alpha_bar], dtype="<f8").tobytes())
        if self.times is not None:
            h.update(np.array([float(f"{v:.12g}") for v in self.times], dtype="<f8").tobytes())
        if self.family != "vp":  # VP grids keep the fingerprints of earlier schedule files
            h.update(json.dumps(self.spec(), sort_keys=True).encode())
        return h.hexdigest()[:16]

    def __eq__(self, other):
        if not isinstance(other, NoiseSchedule):
            return NotImplemented
        return self.fingerprint == other.fingerprint and self.process_fingerprint == other.process_fingerprint

    def __hash__(self):
        return hash((self.fingerprint, self.process_fingerprint))

    def __repr__(self):
        lo, hi = self.lam_range
        return (
            f"NoiseSchedule({self.spec()['kind']}, K={self.K}, N={self.num_train_timesteps}, "
            f"lambda in [{lo:.4g}, {hi:.4g}], fingerprint={self.fingerprint})"
        )


# The largest grid (T, N or K) that a noise schedule rebuilt from a file may have: 8 MB per
# float64 table; a file that names more is refused, never allocated.
MAX_GRID_SIZE = 1_000_000


def noise_schedule_from_origin(origin: dict) -> NoiseSchedule:
    """Rebuilds a :class:`NoiseSchedule` from its :attr:`~NoiseSchedule.origin` (the form model
    configs and schedule files record): ``{"kind": "linear" | "cosine" | "vp_continuous" |
    "ve" | "edm" | "flow", ...the constructor's arguments, "K": grid size (optional)}``."""
    d = dict(origin)
    kind = d.pop("kind", None)
    K = d.pop("K", None)
    for key in ("T", "N", "K"):  # sizes read from files are bounded before anything is allocated
        v = K if key == "K" else d.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 2 <= v <= MAX_GRID_SIZE):
            raise ValueError(f"grid size {key}={v!r} must be an integer in [2, {MAX_GRID_SIZE}]")
    makers = {
        "linear": lambda T, beta_start=1e-4, beta_end=0.02: NoiseSchedule.linear(int(T), float(beta_start), float(beta_end)),
        "cosine": lambda T, s=0.008, max_beta=0.999: NoiseSchedule.cosine(int(T), float(s), float(max_beta)),
        "vp_continuous": lambda vp_kind="linear", **kw: NoiseSchedule.vp_continuous(vp_kind, **kw),
        "ve": lambda **kw: NoiseSchedule.ve(**kw),
        "edm": lambda **kw: NoiseSchedule.edm(**kw),
        "flow": lambda **kw: NoiseSchedule.flow(**kw),
    }
    if kind not in makers:
        raise ValueError(f"unknown noise schedule kind {kind!r} (expected one of {sorted(makers)})")
    ns = makers[kind](**d)
    return ns if K is None else ns.respace(int(K))
