"""Schedules (and solver coefficients) tuned for one model and one solver.

- :mod:`.local_error` — accurate trajectories and a dynamic program over measured local
  errors;
- :mod:`.teacher` — the teacher solve, the fitted / held-out split, per-sample error
  statistics and the guard that never returns a tuned schedule worse than a fixed one;
- :mod:`.learn` — ``learn_schedule``: times learned by gradient through the sampler;
- :mod:`.optimize` — ``optimize_schedule``: a derivative-free search of the global error.

Built on :mod:`rbe_jax.core`.
"""
