"""Progress reporting shared by the long-running calls (:func:`rbe_jax.calibrate`,
:func:`rbe_jax.optimize_schedule`): ``progress=True`` shows a tqdm bar, a callable receives
each stage's statistics, ``False`` reports nothing."""

from __future__ import annotations

from typing import Callable


def progress_reporter(progress, *, total: int, desc: str, postfix: Callable[[dict], dict]):
    """``(report, close)``: ``report(stats)`` after each stage, ``close()`` at the end.

    The bar's total is the most stages the call may take; ``close`` sets it to the stages
    actually made (a search that stops early ends with a full bar)."""
    if callable(progress):
        return progress, lambda: None
    if not progress:
        return (lambda r: None), (lambda: None)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="run", dynamic_ncols=True)

    def report(r: dict) -> None:
        bar.update(1)
        bar.set_postfix(**postfix(r))

    def close() -> None:
        bar.total = bar.n
        bar.refresh()
        bar.close()

    return report, close
