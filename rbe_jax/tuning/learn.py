"""Schedules learned by gradient through the sampler: :func:`learn_schedule`.

The idea of LD3 (Tong et al., ICLR 2025, "Learning to discretize denoising diffusion ODEs"):
the ``nfe + 1`` points of a schedule are the only parameters; the few-step sampler's output
from the calibration noise is matched to an accurate solve of the same noise (the
:class:`rbe_jax.tuning.teacher.Teacher`) by differentiating through the jitted ``lax.scan`` sampler
(each step under ``jax.checkpoint``, so memory does not grow with the network's activations
times NFE).  Soft teacher forcing (LD3): the student may start from a point inside a small
ball around the teacher's noise, which makes the target reachable and overfits less.

The points are parametrised so that every parameter value is a valid schedule: the noisiest
point stays at the process's noisiest trained point ``lam_min`` and the others are

- ``lam_min + (lam_max - lam_min) cumsum(softmax(theta))`` when ``lam_min`` is finite, or
- ``lam_max - reverse_cumsum(softplus(theta))`` from pure noise (``lam_min = -inf``),

so they stay strictly ordered and inside the trained range under any gradient step.

:func:`learn_schedule` in six steps, one function each:

1. :func:`_prepare` — the public edge: the model in the internal form, the checks, and the
   teacher (a :class:`Teacher` passed as ``calib`` is reused, so one solve serves every
   solver and NFE);
2. :func:`rbe_jax.tuning.teacher.split` — the last ``validation`` part is held out;
3. :func:`rbe_jax.tuning.teacher.score_candidates` — every standard spacing of the process
   and the given ``candidates``, sampled once; the start is the best on the fitted part;
4. :func:`_optimise` — Adam (linear warm-up, cosine decay; :func:`_make_update`) on
   minibatches of the fitted part, with LD3's start offsets inside a ball when ``ball > 0``;
5. every ``eval_every`` steps :func:`_judge` scores the iterate on the held-out part; the
   best admissible iterate is kept, and learning stops after ``patience`` judgements
   without improvement;
6. :func:`_learned` — the guard (:func:`rbe_jax.tuning.teacher.pick_guarded`): an iterate is
   admissible only when it is surely no worse on the held-out part than the best candidate
   (by RMSE on all the calibration samples) in RMSE and in median; without one, that
   candidate's points are returned (``info["selected"]``).
"""

from __future__ import annotations

import math
import time
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..core._batch import compute_dtype
from ..core._progress import progress_reporter
from ..core.models import model_noise_schedule
from ..core.noise import NoiseSchedule
from ..core.sampler import _scan, prepare_denoiser
from ..core.schedule import Schedule, baseline_schedule, check_nfe, schedule_points, valid_baselines
from ..core.solvers import DEFAULT_SOLVER, Solver, dpmpp2m_coefficients, get_solver
from .local_error import accurate_steps
from .teacher import Candidates, ErrorStats, Teacher, balanced, best_of, error_stats, per_sample_rms, pick_guarded, sample_stats, score_candidates, solve_teacher, split

MAX_NFE = 1000  # a gradient through more steps than this is no fast sampler (and its memory grows with it)

__all__ = ["learn_schedule", "LearnOptions", "LOSSES"]

LOSSES = ("balanced", "mse", "rms")
_MIN_GAP = 1e-4  # smallest share of the range between two points when a start is turned into parameters


class _Range(NamedTuple):
    lo: float  # the noisiest point (fixed); -inf: pure noise
    hi: float  # the least noisy trained point (the top of the range)


def _lam_of(theta, r: _Range, xp=jnp):
    """The ``(nfe + 1,)`` points of parameters ``theta`` (``(nfe,)`` from a finite start,
    ``(nfe - 1,)`` from pure noise)."""
    if math.isfinite(r.lo):
        w = _softmax(theta, xp)
        inner = r.lo + (r.hi - r.lo) * xp.cumsum(w)[:-1]
    else:
        g = _softplus(theta, xp)  # the gaps below each point, the top one last
        inner = r.hi - xp.cumsum(g[::-1])[::-1]
    return xp.concatenate([xp.asarray([r.lo], inner.dtype), inner, xp.asarray([np.inf], inner.dtype)])


def _softmax(theta, xp):
    e = xp.exp(theta - xp.max(theta))
    return e / xp.sum(e)


def _softplus(theta, xp):
    return xp.logaddexp(theta, 0.0)


def _theta_of(lam: np.ndarray, r: _Range) -> np.ndarray:
    """Parameters whose points are (close to) ``lam`` ``(nfe + 1,)``; gaps below
    ``_MIN_GAP`` of the range (a point at the top of it, say) are widened to it."""
    inner = np.asarray(lam, np.float64)[1:-1]
    if math.isfinite(r.lo):
        w = np.diff(np.concatenate([[r.lo], inner, [r.hi]])) / (r.hi - r.lo)
        w = np.maximum(w, _MIN_GAP)
        return np.log(w / w.sum())
    g = np.maximum(np.diff(np.append(inner, r.hi)), _MIN_GAP * max(1.0, r.hi - float(inner[0]) if inner.size else 1.0))
    return np.log(np.expm1(g))  # softplus^-1


@jax.jit
def _sample_with_coefficients(den, noise, pts, c, e):
    """Samples of ``noise`` with :func:`dpmpp2m_coefficients` ``(c, e)`` (traced: one compilation)."""
    return _scan(den, noise, pts, dpmpp2m_coefficients(c, e)).x


def _criterion(loss: str, ref: ErrorStats) -> Callable[[ErrorStats], float]:
    """How iterates and candidates are ranked for ``loss`` (``ref``: the best candidates' stats)."""
    if loss == "mse":
        return lambda st: st.rmse
    if loss == "rms":
        return lambda st: st.score
    return balanced(ref)


def _loss_value(loss: str, ref: ErrorStats, d: jax.Array) -> jax.Array:
    """The training loss of the ``(b, D)`` differences ``d`` from the teacher: what
    :func:`_criterion` ranks, written on traced arrays (``"balanced"`` relative to ``ref``)."""
    mse = jnp.mean(d * d, axis=1)
    e = jnp.sqrt(mse + 1e-12)
    if loss == "mse":
        return jnp.mean(mse)
    if loss == "rms":
        return jnp.mean(e)
    return 0.5 * (jnp.mean(mse) / ref.rmse**2 + jnp.mean(e) / ref.score)


class LearnOptions(NamedTuple):
    """The optimisation settings of :func:`learn_schedule` (see its arguments)."""

    solver: Solver
    steps: int = 100
    learning_rate: float = 0.02
    warmup: int = 10
    batch_size: int = 32
    ball: float = 0.0
    loss: str = "balanced"
    eval_every: int = 10
    patience: int = 8
    seed: int = 0
    coefficients: bool = False
    guard: bool = True

    def check(self) -> "LearnOptions":
        """Raises ``ValueError`` naming the first bad option."""
        if self.coefficients and self.solver.name != "dpmpp2m":
            raise ValueError(f"coefficients=True learns DPM-Solver++(2M)'s coefficients: pass solver='dpmpp2m', not {self.solver.name!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {LOSSES}")
        for name, lowest in (("steps", 0), ("warmup", 0), ("batch_size", 1), ("eval_every", 1), ("patience", 1)):
            v = getattr(self, name)
            if not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= lowest):
                raise ValueError(f"{name} must be an integer >= {lowest}, got {v!r}")
        for name, v, ok in (("learning_rate", self.learning_rate, self.learning_rate > 0), ("ball", self.ball, self.ball >= 0)):
            if not (math.isfinite(v) and ok):
                raise ValueError(f"{name} must be a finite number {'> 0' if name == 'learning_rate' else '>= 0'}, got {v}")
        return self


def _prepare(model, noise_schedule: NoiseSchedule, calib, nfe: int, candidates: Sequence[Schedule], teacher_steps):
    """The public edge: ``(denoiser, teacher)`` after every check of the model, the noise and
    the candidates (the teacher is solved here unless ``calib`` is one)."""
    teacher = calib if isinstance(calib, Teacher) else None
    den, noise = prepare_denoiser(model, calib.noise if teacher is not None else calib, noise_schedule, noise_schedule.lam_range[0])
    if getattr(den, "quantize", False):
        raise ValueError("this model quantizes its time input (as_model(..., quantize=True)): a learned schedule needs one that accepts fractional times")
    for s in candidates:
        if not isinstance(s, Schedule) or s.nfe != nfe:
            raise ValueError(f"candidates must be Schedules of {nfe} steps, got {s!r}")
        if s.noise_schedule.process != noise_schedule.process:
            raise ValueError(f"candidate ({s.method}) belongs to noise process {s.noise_schedule.describe()}, not {noise_schedule.describe()}")
    if teacher is None:
        teacher = solve_teacher(den, noise_schedule, noise, accurate_steps(noise_schedule, teacher_steps, "teacher_steps"))
    return den, teacher


def _candidate_schedules(noise_schedule: NoiseSchedule, nfe: int, extra: Sequence[Schedule]) -> dict[str, Schedule]:
    """Every standard spacing that applies to the process, then ``extra`` under its method."""
    cands = {k: baseline_schedule(noise_schedule, nfe, k) for k in valid_baselines(noise_schedule)}
    for s in extra:
        cands[s.method if s.method not in cands else f"{s.method}#{len(cands)}"] = s
    return cands


class _Params(NamedTuple):
    """What Adam moves: the point parameters, the start offsets (soft teacher forcing) and
    the 2M coefficients ``(c, e)`` (``()`` when not learned)."""

    theta: jax.Array
    offset: jax.Array
    coefficients: tuple


def _make_update(den, noise_schedule: NoiseSchedule, r: _Range, opts: LearnOptions, ref_fit: ErrorStats, radius: float, cdt):
    """One jitted Adam step on a minibatch ``rows``: ``update(params, opt_state, noise,
    target, rows) -> (params, opt_state, loss)``, and the optimiser."""
    import optax  # only here: importing rbe_jax stays light

    lr = optax.warmup_cosine_decay_schedule(0.0, opts.learning_rate, max(opts.warmup, 1), max(opts.steps, opts.warmup + 1), opts.learning_rate * 0.01)
    opt = optax.adam(lr)

    def objective(p: _Params, noise, target, rows):
        pts = schedule_points(Schedule.from_lambdas(noise_schedule, _lam_of(p.theta, r)), cdt)
        x0 = noise[rows] + p.offset[rows] if radius > 0 else noise[rows]
        solver = dpmpp2m_coefficients(*p.coefficients) if p.coefficients else opts.solver
        x = _scan(den, x0.astype(noise.dtype), pts, solver, remat=True).x
        return _loss_value(opts.loss, ref_fit, (x.astype(cdt) - target[rows].astype(cdt)).reshape(rows.shape[0], -1))

    @jax.jit
    def update(p: _Params, opt_state, noise, target, rows):
        val, g = jax.value_and_grad(objective)(p, noise, target, rows)
        g = jax.tree_util.tree_map(lambda v: jnp.where(jnp.isfinite(v), v, 0.0), g)
        upd, opt_state = opt.update(g, opt_state, p)
        p = _Params(*optax.apply_updates(p, upd))
        if radius > 0:  # project each start offset back into its ball
            norm = jnp.sqrt(jnp.sum(p.offset.astype(cdt) ** 2, axis=tuple(range(1, p.offset.ndim)), keepdims=True))
            p = p._replace(offset=(p.offset * jnp.minimum(1.0, radius / jnp.maximum(norm, 1e-12))).astype(p.offset.dtype))
        return p, opt_state, val

    return update, opt


def _judge(den, noise_schedule: NoiseSchedule, r: _Range, solver: Solver, held: Teacher, p: _Params) -> tuple[Schedule, ErrorStats]:
    """The schedule of the parameters ``p`` and its statistics on the held-out part."""
    lam = _lam_of(np.asarray(p.theta, np.float64), r, np)
    if not p.coefficients:
        s = Schedule.from_lambdas(noise_schedule, lam, method="learned")
        return s, sample_stats(den, s, solver, held)
    c, e = (np.asarray(v, np.float64) for v in p.coefficients)
    s = Schedule.from_lambdas(noise_schedule, lam, method="learned", info=dict(coefficients=dict(base="dpmpp2m", c=c.tolist(), e=e.tolist())))
    x = _sample_with_coefficients(den, held.noise, schedule_points(s, compute_dtype(held.noise.dtype)), *p.coefficients)
    return s, error_stats(per_sample_rms(x, held.x))


class _Run(NamedTuple):
    """What the optimisation loop found: the best admissible iterate (``None``: none)."""

    schedule: Schedule | None
    stats: ErrorStats | None
    best_step: int
    steps_taken: int
    history: list
    model_evals: int


def _optimise(den, noise_schedule: NoiseSchedule, nfe: int, fit: Teacher, held: Teacher, cands: Candidates, start: str, opts: LearnOptions, progress, t0: float) -> _Run:
    """Adam from the candidate ``start`` on minibatches of ``fit``, judged on ``held`` every
    ``eval_every`` steps, stopped after ``patience`` judgements without improvement."""
    r = _Range(*noise_schedule.lam_range)
    cdt = compute_dtype(fit.noise.dtype)
    n_fit = int(fit.noise.shape[0])
    bs = min(opts.batch_size, n_fit)
    radius = opts.ball * math.sqrt(int(np.prod(fit.noise.shape[1:])))
    crit = _criterion(opts.loss, best_of(cands.on_held))
    update, opt = _make_update(den, noise_schedule, r, opts, best_of(cands.on_fit), radius, cdt)
    co = (jnp.zeros((nfe,), cdt), jnp.zeros((nfe,), cdt)) if opts.coefficients else ()  # 2M's own at zero
    params = _Params(jnp.asarray(_theta_of(np.asarray(cands.schedules[start].lam, np.float64), r), cdt), jnp.zeros(fit.noise.shape, fit.noise.dtype), co)
    opt_state = opt.init(params)
    steps = 0 if nfe == 1 else opts.steps  # nfe 1: no point to move
    top, bad, evals, losses = crit(cands.on_held[start]), 0, 0, []
    best_s, best, best_step, history, step = None, None, 0, [], 0
    rng = np.random.default_rng(opts.seed)
    report, close = progress_reporter(
        progress, total=max(1, steps // opts.eval_every), desc=f"learning a {opts.solver.name} schedule, nfe={nfe}",
        postfix=lambda q: dict(loss=f"{q['loss']:.4g}", held_out=f"{q['held_out']:.4g}"),
    )
    try:
        for step in range(1, steps + 1):
            rows = np.arange(n_fit) if bs == n_fit else np.sort(rng.choice(n_fit, bs, replace=False))
            params, opt_state, val = update(params, opt_state, fit.noise, fit.x, jnp.asarray(rows))
            evals += nfe * bs
            losses.append(val)
            if step % opts.eval_every and step != steps:
                continue
            s, st = _judge(den, noise_schedule, r, opts.solver, held, params)
            evals += nfe * int(held.noise.shape[0])
            fit_loss, losses, c = float(np.mean(jax.device_get(losses))), [], crit(st)
            history.append([step, round(fit_loss, 7), round(c, 7)])
            admissible = not opts.guard or pick_guarded(st, cands.on_held, cands.on_all)[0] is None
            if admissible and (best is None or c < crit(best)):
                best_s, best, best_step = s, st, step
            top, bad = (c, 0) if c < top else (top, bad + 1)
            report(dict(step=step, loss=fit_loss, held_out=c, evals=evals, seconds=round(time.perf_counter() - t0, 1)))
            if bad >= opts.patience:
                break
    finally:
        close()
    return _Run(best_s, best, best_step, step, history, evals)


def _learned(noise_schedule: NoiseSchedule, cands: Candidates, start: str, run: _Run, teacher: Teacher, opts: LearnOptions, n_fit: int, evals: int, t0: float) -> Schedule:
    """The result of :func:`learn_schedule`: the best admissible iterate, or the guard's
    reference when there is none, with everything learned and measured in ``info``."""
    if run.schedule is None:
        selected, best_s, best = cands.reference, cands.schedules[cands.reference], cands.on_held[cands.reference]
        why = f"no iterate was no worse than the best fixed candidate on the held-out samples in RMSE and median: {selected} kept"
    else:
        selected, best_s, best = "learned", run.schedule, run.stats
        why = "no worse than the best fixed candidate on the held-out samples" if opts.guard else "guard off"
    info = dict(
        solver=opts.solver.name, selected=selected, guard=why, guard_reference=cands.reference, start=start,
        held_out=best.as_dict(), candidates={k: v.as_dict() for k, v in cands.on_held.items()},
        fit_samples=n_fit, held_out_samples=int(teacher.noise.shape[0]) - n_fit,
        steps_taken=run.steps_taken, best_step=run.best_step, loss=opts.loss, ball=opts.ball, learning_rate=opts.learning_rate,
        batch_size=min(opts.batch_size, n_fit), history=run.history,
        teacher_steps=teacher.steps, teacher_evals=teacher.model_evals, teacher_seconds=teacher.seconds,
        model_evals=int(evals + run.model_evals), seconds=round(time.perf_counter() - t0, 2),
    )
    if selected == "learned" and opts.coefficients:
        info["coefficients"] = best_s.info["coefficients"]
    return Schedule.from_lambdas(noise_schedule, np.asarray(best_s.lam, np.float64), method="learned", info=info)


def learn_schedule(
    model,
    noise_schedule: NoiseSchedule | None,
    calib: jax.Array | Teacher,
    nfe: int,
    solver: str | Solver = DEFAULT_SOLVER,
    *,
    teacher_steps: int | None = None,
    validation: float | int = 0.25,
    candidates: Sequence[Schedule] = (),
    steps: int = 100,
    learning_rate: float = 0.02,
    warmup: int = 10,
    batch_size: int = 32,
    ball: float = 0.0,
    loss: str = "balanced",
    eval_every: int = 10,
    patience: int = 8,
    seed: int = 0,
    coefficients: bool = False,
    guard: bool = True,
    progress: bool | Callable[[dict], None] = False,
) -> Schedule:
    """A continuous-time schedule of ``nfe`` steps learned for ``model`` and ``solver`` by
    gradient descent on the sampler's global error (the steps are in the module docstring).

    Args:
      model: any family and prediction (see :func:`rbe_jax.rbe_sample`); it must accept
        fractional times (not ``as_model(..., quantize=True)``).
      noise_schedule: the model's noise schedule (``None``: the one the model carries,
        ``model.noise_schedule``).
      calib: ``(B, ...)`` standard-normal calibration noise (about a hundred samples; it may
        be sharded), or a :class:`Teacher` of it (one solve serves every solver and NFE).
      nfe: steps (``>= 1``); solver: the solver learned for (a name or :class:`Solver`).
      teacher_steps: steps of the teacher's solve (default ``min(K, 500)``).
      validation: the held-out part: a fraction in (0, 1) or a count of samples.
      candidates: further schedules of ``nfe`` steps to start from and to guard against.
      steps, learning_rate, warmup, batch_size: Adam's most steps, peak rate, linear
        warm-up (then cosine decay) and minibatch of fitted samples.
      ball: LD3's soft teacher forcing radius relative to ``sqrt(D)`` (``0``: off).
      loss: ``"balanced"`` (half the MSE, half the mean per-sample error, each relative to
        the best candidate's), ``"mse"`` or ``"rms"`` (the mean per-sample error).
      eval_every, patience: steps between held-out judgements; judgements without
        improvement before stopping.
      seed: the minibatch order.
      coefficients: also learn DPM-Solver++(2M)'s per-step history coefficients
        (:func:`rbe_jax.dpmpp2m_coefficients`; needs ``solver="dpmpp2m"``); sample with
        :func:`rbe_jax.learned_solver` of the result.
      guard: return an iterate only where it is surely no worse on the held-out part than
        the best fixed candidate (``False``: the best iterate whatever it scores).
      progress: ``True`` for a tqdm bar, or a callable receiving ``{"step", "loss",
        "held_out", "evals", "seconds"}`` after each judgement.
    Returns:
      A :class:`Schedule` with ``method="learned"``; its ``info`` holds ``solver``,
      ``selected`` (``"learned"`` or the candidate the guard kept), ``guard``,
      ``guard_reference``, ``start``, ``held_out`` and ``candidates`` (held-out statistics),
      ``history`` (``[step, fit loss, held-out score]``), ``coefficients`` (when learned),
      the settings, and the cost: ``teacher_evals``, ``teacher_seconds``, ``model_evals``,
      ``seconds``.
    Raises:
      TypeError, ValueError: bad options, a model that quantizes its time, candidates of
        another NFE or process, noise that does not match a given teacher.
    """
    t0 = time.perf_counter()
    nfe = check_nfe(nfe, MAX_NFE)
    opts = LearnOptions(get_solver(solver), steps, learning_rate, warmup, batch_size, ball, loss, eval_every, patience, seed, coefficients, guard).check()
    noise_schedule = model_noise_schedule(model, noise_schedule)
    den, teacher = _prepare(model, noise_schedule, calib, nfe, candidates, teacher_steps)
    fit_rows, held_rows = split(teacher.noise.shape[0], validation)
    cands = score_candidates(den, _candidate_schedules(noise_schedule, nfe, candidates), opts.solver, teacher, fit_rows, held_rows)
    crit_fit = _criterion(loss, best_of(cands.on_fit))
    start = min(cands.on_fit, key=lambda k: crit_fit(cands.on_fit[k]))
    run = _optimise(den, noise_schedule, nfe, teacher.take(fit_rows), teacher.take(held_rows), cands, start, opts, progress, t0)
    evals = len(cands.schedules) * nfe * int(teacher.noise.shape[0])
    return _learned(noise_schedule, cands, start, run, teacher, opts, int(fit_rows.size), evals, t0)
