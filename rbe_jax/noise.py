"""Discrete DDPM noise schedules: alpha-bar tables, respacing, alpha / sigma / log-SNR.

A :class:`NoiseSchedule` is host-side configuration (NumPy float64 tables), not a traced
value: it is read once when a schedule or a sampler is built, and its numbers enter jitted
code as constants.  The same class describes both a model's full training schedule
(``timesteps == arange(T)``) and a respaced grid of ``K`` of those steps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np

__all__ = ["NoiseSchedule"]


def _as_alpha_bar(alpha_bar) -> np.ndarray:
    a = np.asarray(alpha_bar, dtype=np.float64)
    if a.ndim != 1 or a.size < 2:
        raise ValueError(f"alpha_bar must be a 1-D table with at least 2 entries, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("alpha_bar contains NaN or Inf")
    if np.any(a <= 0.0) or np.any(a >= 1.0):
        raise ValueError(
            f"alpha_bar must lie strictly inside (0, 1), got range [{a.min():.3g}, {a.max():.3g}]"
        )
    if np.any(np.diff(a) >= 0.0):
        bad = int(np.argmax(np.diff(a) >= 0.0))
        raise ValueError(
            f"alpha_bar must be strictly decreasing toward noise; entry {bad + 1} "
            f"({a[bad + 1]!r}) is not below entry {bad} ({a[bad]!r})"
        )
    return a


@dataclasses.dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """The alpha-bar table of a discrete-time DDPM, or a respaced grid of it.

    Attributes:
      alpha_bar: ``(N,)`` float64, strictly decreasing (index 0 is the least noisy point).
      timesteps: ``(N,)`` int64, the ORIGINAL training timestep of each entry; the model is
        called with these.  ``arange(T)`` for a full schedule.
      num_train_timesteps: ``T``, the length of the original training schedule.
      times: ``(N,)`` float64 or ``None``: for a continuous-time model, the model's time
        input ``t in (0, 1]`` of each entry (see :meth:`vp_continuous`); a discrete model
        is called with ``timesteps`` instead.

    Grid conventions used by the rest of the library: grid point ``k`` has
    ``alpha_bar[k]``; the virtual point ``k = -1`` is clean data with ``alpha_bar = 1``.
    """

    alpha_bar: np.ndarray
    timesteps: np.ndarray
    num_train_timesteps: int
    times: np.ndarray | None = None

    def __post_init__(self):
        a = _as_alpha_bar(self.alpha_bar)
        t = np.asarray(self.timesteps)
        if t.shape != a.shape:
            raise ValueError(f"timesteps shape {t.shape} does not match alpha_bar shape {a.shape}")
        if not np.issubdtype(t.dtype, np.integer):
            if not np.all(np.asarray(t) == np.round(t)):
                raise ValueError("timesteps must be integers")
        t = t.astype(np.int64)
        if np.any(np.diff(t) <= 0) or t[0] < 0 or t[-1] >= self.num_train_timesteps:
            raise ValueError(
                "timesteps must be strictly increasing original timesteps in "
                f"[0, {self.num_train_timesteps - 1}]"
            )
        if self.times is not None:
            tc = np.asarray(self.times, dtype=np.float64)
            if tc.shape != a.shape or np.any(np.diff(tc) <= 0):
                raise ValueError("times must be strictly increasing and match alpha_bar's shape")
            tc.setflags(write=False)
            object.__setattr__(self, "times", tc)
        a.setflags(write=False)
        t.setflags(write=False)
        object.__setattr__(self, "alpha_bar", a)
        object.__setattr__(self, "timesteps", t)
        object.__setattr__(self, "num_train_timesteps", int(self.num_train_timesteps))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_alpha_bar(cls, alpha_bar) -> "NoiseSchedule":
        """A full training schedule from its cumulative products ``alpha_bar`` ``(T,)``."""
        a = _as_alpha_bar(alpha_bar)
        return cls(alpha_bar=a, timesteps=np.arange(a.size), num_train_timesteps=a.size)

    @classmethod
    def from_betas(cls, betas) -> "NoiseSchedule":
        """A full training schedule from its per-step betas ``(T,)`` (each in (0, 1))."""
        b = np.asarray(betas, dtype=np.float64)
        if b.ndim != 1 or b.size < 2:
            raise ValueError(f"betas must be a 1-D array with at least 2 entries, got shape {b.shape}")
        if not np.all(np.isfinite(b)) or np.any(b <= 0.0) or np.any(b >= 1.0):
            raise ValueError("betas must be finite and strictly inside (0, 1)")
        return cls.from_alpha_bar(np.cumprod(1.0 - b))

    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        """DDPM's linear beta schedule (Ho et al. 2020)."""
        if T < 2:
            raise ValueError(f"T must be >= 2, got {T}")
        return cls.from_betas(np.linspace(beta_start, beta_end, T, dtype=np.float64))

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "NoiseSchedule":
        """Improved DDPM's cosine schedule (Nichol & Dhariwal 2021), betas capped at ``max_beta``."""
        if T < 2:
            raise ValueError(f"T must be >= 2, got {T}")
        f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2
        betas = [min(1.0 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)]
        return cls.from_betas(np.asarray(betas))

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
        """A continuous-time VP schedule on a fine grid of ``N`` times in ``[t_eps, 1]``.

        ``kind="linear"``: ``log alpha_bar(t) = -(beta_min t + (beta_max - beta_min) t^2 / 2)``
        (Song et al.'s VP SDE); ``kind="cosine"``: ``alpha_bar(t) = cos^2(((t + s)/(1 + s)) pi/2)
        / cos^2((s / (1 + s)) pi/2)``.  Entry ``i`` has ``times[i] = t_eps + (t_max - t_eps) i/(N-1)``
        (``t_max`` defaults to 1, and to 0.9946 for cosine, DPM-Solver's choice, where
        alpha-bar would otherwise vanish);
        wrap the model with :func:`rbe_jax.continuous_time_model` so that it is called with
        these continuous times, and everything else (RBE, calibration, solvers) is unchanged.
        """
        if t_max is None:
            t_max = 0.9946 if kind == "cosine" else 1.0
        if N < 2 or not 0.0 < t_eps < t_max <= 1.0:
            raise ValueError(f"need N >= 2 and 0 < t_eps < t_max <= 1, got N={N}, t_eps={t_eps}, t_max={t_max}")
        t = t_eps + (t_max - t_eps) * np.arange(N) / (N - 1)
        if kind == "linear":
            if not 0 <= beta_min < beta_max:
                raise ValueError(f"need 0 <= beta_min < beta_max, got {beta_min}, {beta_max}")
            a = np.exp(-(beta_min * t + 0.5 * (beta_max - beta_min) * t**2))
        elif kind == "cosine":
            f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2
            a = f(t) / f(0.0)
        else:
            raise ValueError(f"unknown continuous schedule kind {kind!r} (expected 'linear' or 'cosine')")
        return cls(alpha_bar=a, timesteps=np.arange(N), num_train_timesteps=N, times=t)

    # ------------------------------------------------------------------ grids
    def respace(self, K: int) -> "NoiseSchedule":
        """The ``K``-point grid of evenly spaced entries, first and last included.

        Follows improved-diffusion's single-section ``space_timesteps``: stride
        ``(N - 1) / (K - 1)``, each position rounded.  ``alpha_bar`` values are those of the
        chosen entries, ``timesteps`` their original training timesteps.
        """
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
        return NoiseSchedule(
            alpha_bar=self.alpha_bar[idx],
            timesteps=self.timesteps[idx],
            num_train_timesteps=self.num_train_timesteps,
            times=None if self.times is None else self.times[idx],
        )

    # ------------------------------------------------------------------ helpers
    def __len__(self) -> int:
        return int(self.alpha_bar.size)

    @property
    def K(self) -> int:
        """Number of grid points."""
        return int(self.alpha_bar.size)

    @property
    def alpha(self) -> np.ndarray:
        """``sqrt(alpha_bar)``, the signal scale."""
        return np.sqrt(self.alpha_bar)

    @property
    def sigma(self) -> np.ndarray:
        """``sqrt(1 - alpha_bar)``, the noise scale."""
        return np.sqrt(1.0 - self.alpha_bar)

    @property
    def log_snr(self) -> np.ndarray:
        """Half-log-SNR ``lambda = log(alpha / sigma)``; increases toward data."""
        return 0.5 * (np.log(self.alpha_bar) - np.log1p(-self.alpha_bar))

    @property
    def alpha_bar_ext(self) -> np.ndarray:
        """``(K + 1,)``: ``[1, alpha_bar[0], ..., alpha_bar[K-1]]``, indexed by grid index + 1."""
        return np.concatenate([[1.0], self.alpha_bar])

    @property
    def fingerprint(self) -> str:
        """A short hash of the grid (alpha-bar to 12 significant digits and timesteps)."""
        h = hashlib.sha256()
        h.update(np.array([self.num_train_timesteps], dtype=np.int64).tobytes())
        h.update(self.timesteps.astype("<i8").tobytes())
        h.update(np.array([float(f"{v:.12g}") for v in self.alpha_bar], dtype="<f8").tobytes())
        if self.times is not None:
            h.update(np.array([float(f"{v:.12g}") for v in self.times], dtype="<f8").tobytes())
        return h.hexdigest()[:16]

    def __eq__(self, other):
        if not isinstance(other, NoiseSchedule):
            return NotImplemented
        return (
            self.num_train_timesteps == other.num_train_timesteps
            and np.array_equal(self.timesteps, other.timesteps)
            and np.array_equal(self.alpha_bar, other.alpha_bar)
            and (self.times is None) == (other.times is None)
            and (self.times is None or np.array_equal(self.times, other.times))
        )

    def __hash__(self):
        return hash(self.fingerprint)

    def __repr__(self):
        return (
            f"NoiseSchedule(K={self.K}, T={self.num_train_timesteps}, "
            f"alpha_bar=[{self.alpha_bar[0]:.6g} .. {self.alpha_bar[-1]:.6g}], "
            f"fingerprint={self.fingerprint})"
        )
