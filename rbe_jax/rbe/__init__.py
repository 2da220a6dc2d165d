"""The RBE method (Gao et al., arXiv 2304.11446): schedules from a backward-error bound.

- :mod:`.error_bound` — the pure pieces: the one-grid-step field, the backward-error
  indicator, the step-size rule and the snap-down to the grid;
- :mod:`.adaptive` — per-sample adaptive paths (a jitted ``lax.while_loop`` per batch);
- :mod:`.calibration` — from those paths to one fixed schedule: ``calibrate``.

Built on :mod:`rbe_jax.core` only.
"""
