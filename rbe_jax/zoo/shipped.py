"""The schedules shipped beside a model: their file names, which one to use by default, and
:func:`pretrained_schedule`, the Python side of the CLI's ``--schedule auto``.

A model directory may hold, under ``schedules/``, for ``N`` steps (``_wG``: made for
classifier-free guidance weight ``G``, for any label):

- ``learned_nfeN_SOLVER[_wG].json``: learned by gradient for ``SOLVER`` (:func:`rbe_jax.learn_schedule`);
- ``optimized_nfeN_SOLVER[_wG].json``: optimized for ``SOLVER`` (:func:`rbe_jax.optimize_schedule`);
- ``rbe_nfeN[_wG].json``: the RBE schedule (:func:`rbe_jax.calibrate`), for any solver.

The default is the first of these that exists: a tuned schedule is shipped only where it beat
the RBE one on held-out noise.
"""

from __future__ import annotations

from pathlib import Path

from .checkpoint import ModelInfo, model_info
from ..core.schedule import Schedule, ScheduleError
from ..core.solvers import DEFAULT_SOLVER

__all__ = ["SHIPPED_KINDS", "shipped_schedule_file", "load_model_schedule", "pretrained_schedule"]

SHIPPED_KINDS = ("learned", "optimized", "rbe")  # the default's order of preference


def shipped_schedule_file(model_dir, kind: str, nfe: int, solver: str = DEFAULT_SOLVER, guidance: float | None = None) -> Path:
    """The path a shipped schedule of ``kind`` would have (it may not exist)."""
    if kind not in SHIPPED_KINDS:
        raise ValueError(f"unknown shipped schedule kind {kind!r}; choose one of {SHIPPED_KINDS}")
    w = "" if guidance is None else f"_w{guidance:g}"
    name = f"rbe_nfe{nfe}{w}.json" if kind == "rbe" else f"{kind}_nfe{nfe}_{solver}{w}.json"
    return Path(model_dir) / "schedules" / name


def load_model_schedule(f, info: ModelInfo) -> Schedule:
    """A schedule file for the model ``info`` describes: one made on its noise process, or a
    version-1 file made on its calibration grid or its full training schedule.

    Raises:
      ScheduleError: a file for another noise process or grid, or a bad file (naming it).
    """
    f = Path(f)
    sched = Schedule.load(f)
    if sched.meta.noise_schedule is None:
        grids = (info.default_grid, info.noise_schedule)
        grid = next((g for g in grids if g.fingerprint == sched.meta.grid_fingerprint), grids[0])
        try:
            return sched.on(grid)
        except ScheduleError as e:
            raise ScheduleError(f"{f}: {e}") from None
    if sched.noise_schedule.process != info.noise_schedule.process:
        raise ScheduleError(f"{f}: made for noise process {sched.noise_schedule.describe()}, not for this model's {info.noise_schedule.describe()}")
    return sched


def pretrained_schedule(name_or_path, nfe: int, solver: str = DEFAULT_SOLVER, guidance: float | None = 0.0, *, kind: str = "auto") -> Schedule:
    """The schedule shipped with a model for ``nfe`` steps and ``solver``: the configuration
    the CLI's ``--schedule auto`` samples with (it calls this function).

    Args:
      name_or_path: a shipped model's name (``"digits"``, ``"digits_cond"``, ``"digits_flow"``),
        a model directory, or its :class:`ModelInfo` when already loaded (reading one again
        re-checks every parameter file's checksum).
      nfe: steps; solver: the solver's name (:data:`rbe_jax.DEFAULT_SOLVER` by default).
      guidance: the classifier-free guidance weight a class-conditional model is sampled
        with (its schedules are shipped per weight, for any label); ``None`` for a
        class-conditional model sampled without a label.  Must be ``0`` (or ``None``) for an
        unconditional model.
      kind: ``"auto"`` (the first of learned, optimized, RBE that is shipped: a tuned
        schedule is shipped only where it beat the RBE one on held-out noise) or one of
        :data:`SHIPPED_KINDS`.
    Raises:
      FileNotFoundError: no such schedule is shipped (make one with
        :func:`rbe_jax.learn_schedule` or ``rbe-jax calibrate``).
      ValueError: an unknown kind, or guidance for an unconditional model.
    """
    if kind != "auto" and kind not in SHIPPED_KINDS:
        raise ValueError(f"unknown schedule kind {kind!r}; choose 'auto' or one of {SHIPPED_KINDS}")
    info = name_or_path if isinstance(name_or_path, ModelInfo) else model_info(name_or_path)
    if not int(getattr(info.config, "num_classes", 0)):
        if guidance:
            raise ValueError(f"guidance={guidance:g} needs a class-conditional model; {info.path} is unconditional")
        guidance = None
    for k in SHIPPED_KINDS if kind == "auto" else (kind,):
        f = shipped_schedule_file(info.path, k, nfe, solver, guidance)
        if f.is_file():
            return load_model_schedule(f, info)
    w = "" if guidance is None else f", guidance {guidance:g}"
    what = "schedule" if kind == "auto" else f"{kind} schedule"
    raise FileNotFoundError(f"no {what} shipped with {info.path} for nfe={nfe}, solver {solver}{w}: make one with rbe_jax.learn_schedule or `rbe-jax calibrate`")
