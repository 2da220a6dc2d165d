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
from ..core.noise import NoiseSchedule
from ..core.sampler import _scan, _scan_jit, prepare_denoiser
from ..core.schedule import Schedule, baseline_schedule, check_nfe, schedule_points, valid_baselines
from ..core.solvers import Solver, dpmpp2m_coefficients, get_solver
from .teacher import ErrorStats, Teacher, balanced, best_by_rmse, best_of, error_stats, make_teacher, per_sample_rms, pick_guarded, split

__all__ = ["learn_schedule", "schedule_stats", "LOSSES"]

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


def schedule_stats(model, schedule: Schedule, solver, teacher: Teacher) -> ErrorStats:
    """The :class:`rbe_jax.tuning.teacher.ErrorStats` of sampling ``teacher.noise`` on ``schedule``
    with ``solver``, against the teacher's endpoints."""
    solver = get_solver(solver)
    den, noise = prepare_denoiser(model, teacher.noise, schedule.noise_schedule, schedule.lam[0])
    pts = schedule_points(schedule, compute_dtype(noise.dtype))
    return error_stats(per_sample_rms(_scan_jit(den, noise, pts, solver).x, teacher.x))


def learn_schedule(
    model,
    noise_schedule: NoiseSchedule,
    calib: jax.Array | Teacher,
    nfe: int,
    solver: str | Solver = "unipc",
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
    gradient descent on the sampler's global error.

    1. The teacher: accurate endpoints of the calibration noise (``calib`` itself when it is a
       :class:`rbe_jax.tuning.teacher.Teacher`, so one solve serves every solver and NFE; else
       :func:`rbe_jax.tuning.teacher.make_teacher` with ``teacher_steps``).
    2. :func:`rbe_jax.tuning.teacher.split`: the last ``validation`` part of the samples is held out;
       the rest is fitted.
    3. Start: the candidate with the lowest score on the fitted part, among every standard
       spacing that applies to the process (:func:`rbe_jax.baseline_schedule`) and the given
       ``candidates`` (an :func:`rbe_jax.optimize_schedule` result, an RBE schedule).
    4. Adam (linear warm-up over ``warmup`` steps, cosine decay) on the parameters of the
       points (see the module docstring) and, with ``ball > 0``, on each fitted sample's start
       offset, kept inside a ball of radius ``ball * sqrt(D)`` around its noise (LD3's soft
       teacher forcing); minibatches of ``batch_size`` fitted samples.
    5. Every ``eval_every`` steps the schedule is scored on the held-out part; the best iterate
       is kept, and learning stops after ``patience`` evaluations without improvement.
    6. The guard (:func:`rbe_jax.tuning.teacher.pick_guarded`): the best iterate is returned only when
       it is no worse on the held-out part than the best candidate in RMSE and in median
       per-sample error (the best by RMSE on all the calibration samples: a steadier ranking
       than on the held-out part alone); otherwise that candidate's points are returned (``info["selected"]``
       says which).

    Args:
      model: the model (see :func:`rbe_jax.rbe_sample`): any family and prediction through
        :func:`rbe_jax.as_model`, guided models included.  It must accept fractional times
        (a ``quantize=True`` model cannot be differentiated in time).
      noise_schedule: the model's noise schedule.
      calib: ``(B, ...)`` standard-normal calibration noise, or a :class:`Teacher` of it.  It
        may be sharded over a mesh.  About a hundred samples suffice (LD3 uses 100); the
        held-out part should have tens.
      nfe: steps of the schedule (``>= 1``).
      solver: the solver the schedule is learned for (a name or :class:`Solver`).
      teacher_steps: steps of the teacher's solve (default ``min(K, 500)``).
      validation: the held-out part: a fraction in (0, 1) or a count of samples.
      candidates: further schedules of ``nfe`` steps to start from and to guard against.
      steps: the most optimisation steps.
      learning_rate: Adam's peak learning rate (for the point parameters and the offsets).
      warmup: linear warm-up steps.
      batch_size: fitted samples per step (all of them when fewer).
      ball: the soft teacher forcing radius, relative to ``sqrt(D)`` (``0``: the student
        starts from the teacher's noise exactly).
      loss: ``"rms"`` (the mean per-sample RMS error: every sample weighs alike, so the
        typical sample is not traded for the few far-off ones) or ``"mse"`` (the mean squared
        error).
      eval_every: optimisation steps between held-out evaluations.
      patience: held-out evaluations without improvement before stopping.
      seed: the minibatch order.
      coefficients: also learn per-step coefficients on DPM-Solver++(2M)'s history
        (:func:`rbe_jax.dpmpp2m_coefficients`, started at 2M's own), jointly with the times;
        needs ``solver="dpmpp2m"``.  They are stored in ``info["coefficients"]`` (when the
        learned times are selected); sample with :func:`rbe_jax.learned_solver` of the
        schedule.
      guard: apply step 6 (``False`` returns the best iterate whatever it scores: for studies).
      progress: ``True`` for a tqdm bar over the held-out evaluations, or a callable receiving
        ``{"step", "loss", "held_out", "evals", "seconds"}`` after each.
    Returns:
      A :class:`Schedule` with ``method="learned"`` and in ``info``: ``solver``, ``selected``
      (``"learned"`` or the candidate kept by the guard), ``guard`` (why),
      ``guard_reference`` (the candidate it compared with), ``start``,
      ``held_out`` (the selected schedule's :class:`ErrorStats` on the held-out part, as a
      dict), ``candidates`` (each candidate's held-out stats), ``fit``/``held_out_samples``,
      ``steps_taken``, ``best_step``, ``loss``, ``ball``, ``learning_rate``, ``history``
      (``[step, fit loss, held-out score]`` at each evaluation), ``teacher_steps``,
      ``teacher_evals`` and ``teacher_seconds`` (the teacher's cost, whoever made it),
      ``model_evals`` (model evaluations summed over samples: candidate scoring, the
      learning's forward passes and held-out checks; each backward pass costs about two
      more) and ``seconds`` (this call, the teacher's solve included when it made it).
    Raises:
      ValueError: bad options, a model that quantizes its time, candidates of another NFE or
        process, noise that does not match a given teacher.
    """
    import optax  # only here: importing rbe_jax stays light

    t0 = time.perf_counter()
    if not isinstance(noise_schedule, NoiseSchedule):
        raise TypeError(f"noise_schedule must be a NoiseSchedule, got {type(noise_schedule).__name__}")
    nfe = check_nfe(nfe)
    solver = get_solver(solver)
    if coefficients and solver.name != "dpmpp2m":
        raise ValueError(f"coefficients=True learns DPM-Solver++(2M)'s coefficients: pass solver='dpmpp2m', not {solver.name!r}")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {LOSSES}")
    for name, v, ok in (
        ("steps", steps, steps >= 0),
        ("warmup", warmup, warmup >= 0),
        ("batch_size", batch_size, batch_size >= 1),
        ("eval_every", eval_every, eval_every >= 1),
        ("patience", patience, patience >= 1),
    ):
        if not (isinstance(v, (int, np.integer)) and ok):
            raise ValueError(f"{name} must be an integer in range, got {v!r}")
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate}")
    if not (math.isfinite(ball) and ball >= 0):
        raise ValueError(f"ball must be a finite number >= 0, got {ball}")
    r = _Range(*noise_schedule.lam_range)
    teacher = calib if isinstance(calib, Teacher) else None
    noise = teacher.noise if teacher is not None else calib
    den, noise = prepare_denoiser(model, noise, noise_schedule, r.lo)
    if getattr(den, "quantize", False):
        raise ValueError("this model quantizes its time input (as_model(..., quantize=True)): a learned schedule needs one that accepts fractional times")
    for s in candidates:
        if not isinstance(s, Schedule) or s.nfe != nfe:
            raise ValueError(f"candidates must be Schedules of {nfe} steps, got {s!r}")
        if s.noise_schedule.process != noise_schedule.process:
            raise ValueError(f"candidate ({s.method}) belongs to noise process {s.noise_schedule.describe()}, not {noise_schedule.describe()}")
    if teacher is None:
        teacher = make_teacher(den, noise_schedule, noise, teacher_steps)
    fit_rows, held_rows = split(noise.shape[0], validation)
    fit, held = teacher.take(fit_rows), teacher.take(held_rows)
    evals = 0

    # -- candidates: the start (best on the fitted part) and the guard (best on the held-out part)
    cands = {k: baseline_schedule(noise_schedule, nfe, k) for k in valid_baselines(noise_schedule)}
    for s in candidates:
        cands[s.method if s.method not in cands else f"{s.method}#{len(cands)}"] = s
    on_all = {k: schedule_stats(den, s, solver, teacher) for k, s in cands.items()}  # ranks the candidates for the guard
    on_fit = {k: v.take(fit_rows) for k, v in on_all.items()}
    on_held = {k: v.take(held_rows) for k, v in on_all.items()}
    reference = best_by_rmse(on_all)
    evals += len(cands) * nfe * int(noise.shape[0])
    ref_fit, ref_held = best_of(on_fit), best_of(on_held)
    crit_fit, crit_held = _criterion(loss, ref_fit), _criterion(loss, ref_held)
    start = min(on_fit, key=lambda k: crit_fit(on_fit[k]))

    cdt = compute_dtype(noise.dtype)
    theta0 = _theta_of(np.asarray(cands[start].lam, np.float64), r)
    n_fit = int(fit.noise.shape[0])
    bs = min(batch_size, n_fit)
    D = int(np.prod(noise.shape[1:]))
    radius = ball * math.sqrt(D)
    coeffs = (jnp.zeros((nfe,), cdt), jnp.zeros((nfe,), cdt)) if coefficients else ()  # 2M's own at zero
    params = (jnp.asarray(theta0, cdt), jnp.zeros(fit.noise.shape, fit.noise.dtype), coeffs)
    sched = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(warmup, 1), max(steps, warmup + 1), learning_rate * 0.01)
    opt = optax.adam(sched)
    opt_state = opt.init(params)

    def objective(p, den, noise, target, rows):
        theta, offset, co = p
        lam = _lam_of(theta, r)
        pts = schedule_points(Schedule.from_lambdas(noise_schedule, lam), cdt)
        x0 = noise[rows] + offset[rows] if radius > 0 else noise[rows]
        x = _scan(den, x0.astype(noise.dtype), pts, dpmpp2m_coefficients(*co) if co else solver, remat=True).x
        d = (x.astype(cdt) - target[rows].astype(cdt)).reshape(rows.shape[0], -1)
        mse = jnp.mean(d * d, axis=1)
        e = jnp.sqrt(mse + 1e-12)
        if loss == "mse":
            return jnp.mean(mse)
        if loss == "rms":
            return jnp.mean(e)
        return 0.5 * (jnp.mean(mse) / ref_fit.rmse**2 + jnp.mean(e) / ref_fit.score)

    @jax.jit
    def update(p, opt_state, den, noise, target, rows):
        val, g = jax.value_and_grad(objective)(p, den, noise, target, rows)
        g = jax.tree_util.tree_map(lambda v: jnp.where(jnp.isfinite(v), v, 0.0), g)
        upd, opt_state = opt.update(g, opt_state, p)
        theta, offset, co = optax.apply_updates(p, upd)
        if radius > 0:  # project each start offset back into its ball
            norm = jnp.sqrt(jnp.sum(offset.astype(cdt) ** 2, axis=tuple(range(1, offset.ndim)), keepdims=True))
            offset = (offset * jnp.minimum(1.0, radius / jnp.maximum(norm, 1e-12))).astype(offset.dtype)
        return (theta, offset, co), opt_state, val

    def held_out(p) -> tuple[Schedule, ErrorStats]:
        theta, _, co = p
        lam = _lam_of(np.asarray(theta, np.float64), r, np)
        if not co:
            s = Schedule.from_lambdas(noise_schedule, lam, method="learned")
            return s, schedule_stats(den, s, solver, held)
        c, e = (np.asarray(v, np.float64) for v in co)
        s = Schedule.from_lambdas(noise_schedule, lam, method="learned", info=dict(coefficients=dict(base="dpmpp2m", c=c.tolist(), e=e.tolist())))
        x = _sample_with_coefficients(den, held.noise, schedule_points(s, cdt), *co)
        return s, error_stats(per_sample_rms(x, held.x))

    if nfe == 1:  # no point to move
        steps = 0
    top = crit_held(on_held[start])  # the best held-out criterion so far (for patience)
    best_s, best, best_step, history, bad, step = None, None, 0, [], 0, 0
    rng = np.random.default_rng(seed)
    report, close = progress_reporter(
        progress,
        total=max(1, steps // eval_every),
        desc=f"learning a {solver.name} schedule, nfe={nfe}",
        postfix=lambda q: dict(loss=f"{q['loss']:.4g}", held_out=f"{q['held_out']:.4g}"),
    )
    try:
        losses = []
        for step in range(1, steps + 1):
            rows = np.arange(n_fit) if bs == n_fit else np.sort(rng.choice(n_fit, bs, replace=False))
            params, opt_state, val = update(params, opt_state, den, fit.noise, fit.x, jnp.asarray(rows))
            evals += nfe * bs
            losses.append(val)
            if step % eval_every and step != steps:
                continue
            s, st = held_out(params)
            evals += nfe * int(held.noise.shape[0])
            fit_loss = float(np.mean(jax.device_get(losses)))
            losses = []
            c = crit_held(st)
            history.append([step, round(fit_loss, 7), round(c, 7)])
            admissible = not guard or pick_guarded(st, on_held, on_all)[0] is None
            if admissible and (best is None or c < crit_held(best)):
                best_s, best, best_step = s, st, step
            top, bad = (c, 0) if c < top else (top, bad + 1)
            report(dict(step=step, loss=fit_loss, held_out=c, evals=evals, seconds=round(time.perf_counter() - t0, 1)))
            if bad >= patience:
                break
    finally:
        close()
    if best is None:
        fallback = reference
        why = f"no iterate was no worse than the best fixed candidate on the held-out samples in RMSE and median: {fallback} kept"
        best_s, best = cands[fallback], on_held[fallback]
    else:
        fallback, why = None, "no worse than the best fixed candidate on the held-out samples" if guard else "guard off"
    info = dict(
        solver=solver.name,
        selected="learned" if fallback is None else fallback,
        guard=why,
        guard_reference=reference,
        start=start,
        held_out=best.as_dict(),
        candidates={k: v.as_dict() for k, v in on_held.items()},
        fit_samples=n_fit,
        held_out_samples=int(held.noise.shape[0]),
        steps_taken=step,
        best_step=best_step,
        loss=loss,
        ball=ball,
        learning_rate=learning_rate,
        batch_size=bs,
        history=history,
        teacher_steps=teacher.steps,
        teacher_evals=teacher.model_evals,
        teacher_seconds=teacher.seconds,
        model_evals=int(evals),
        seconds=round(time.perf_counter() - t0, 2),
    )
    if fallback is None and coefficients:
        info["coefficients"] = best_s.info["coefficients"]
    return Schedule.from_lambdas(noise_schedule, np.asarray(best_s.lam, np.float64), method="learned", info=info)
