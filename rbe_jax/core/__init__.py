"""The core: what every sampler run needs and nothing more.

- :mod:`.noise` — the noise processes of every Gaussian family (VP table and
  continuous, VE, EDM, flow), reduced to half-log-SNR ``lam``;
- :mod:`.models` — adapters from a user's network (eps / x0 / v / score / velocity, Linen
  ``apply`` or NNX module) to the one internal form, a ``Denoiser``;
- :mod:`.checks` — the explicit probe for a mislabelled prediction;
- :mod:`.solvers` — the solver steps (DDIM, DPM-Solver++ 2M/3M, UniPC, learned 2M);
- :mod:`.schedule` — the ``Schedule`` pytree, its JSON file and the fixed spacings;
- :mod:`.sampler` — ``rbe_sample``: one jitted ``lax.scan`` over a schedule.

Nothing here imports from the other layers (``rbe``, ``tuning``, ``zoo``, ``app``).
"""
