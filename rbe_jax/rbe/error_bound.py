"""The pure pieces of RBE: the one-grid-step field, the backward-error indicator, the
step-size rule and the snap-down to the grid (``shared/RBE.md``).

All functions are per-sample and batched over a leading axis ``B``; ``a`` and
``a_next`` are VP alpha-bar values of shape ``(B,)`` (``sigmoid(2 lam)``: the rule is the
same for every family).  Grid indices follow the library's convention: grid point ``k`` has
``alpha_bar_ext[k + 1]``, and index ``-1`` is clean data (``alpha_bar_ext[0] == 1``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..core._batch import per_sample
from ..core.noise import Point

__all__ = [
    "BackwardError",
    "StepSize",
    "field_coefficients",
    "one_step_field",
    "backward_error",
    "step_size",
    "snap_down",
]


def field_coefficients(a: jax.Array, a_next: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(c1, c2)`` of the finite-difference field ``f = c1 x + c2 eps`` over one grid step.

    ``f = (DDIM(x; a -> a_next) - x) / (a_next - a)``, written so that it stays finite when
    ``a_next = 1`` (the step to clean data).

    Args:
      a: ``(B,)`` alpha-bar at the current grid point.
      a_next: ``(B,)`` alpha-bar at the next, less noisy grid point (``> a``).
    Returns:
      ``c1, c2``, each ``(B,)``.
    """
    sa, sn = jnp.sqrt(a), jnp.sqrt(a_next)
    c1 = 1.0 / (sa * (sn + sa))
    c2 = -1.0 / (jnp.sqrt(1.0 - a_next) + jnp.sqrt(1.0 - a)) - jnp.sqrt((1.0 - a) / a) / (sn + sa)
    return c1, c2


def one_step_field(x: jax.Array, eps: jax.Array, a: jax.Array, a_next: jax.Array) -> jax.Array:
    """The field ``f(x) = c1 x + c2 eps``; ``x``, ``eps``: ``(B, ...)``; returns ``(B, ...)``."""
    c1, c2 = field_coefficients(a, a_next)
    return per_sample(c1, x) * x + per_sample(c2, x) * eps


class BackwardError(NamedTuple):
    """Output of :func:`backward_error`.

    Attributes:
      indicator: ``(B,)`` per-sample ``|| grad_x ||f(x)||^2 ||`` (= ``2 ||J_f^T f||``).
      eps: ``(B, ...)`` the model output at ``x`` (reused by the update step).
      field: ``(B, ...)`` the field ``f(x)``.
    """

    indicator: jax.Array
    eps: jax.Array
    field: jax.Array


def backward_error(model, x: jax.Array, pt: Point, a: jax.Array, a_next: jax.Array) -> BackwardError:
    """The RBE indicator of every sample, with one forward pass and one ``jax.vjp``.

    The gradient of ``sum_b ||f(x_b)||^2`` is taken for the whole batch at once; it is the
    per-sample gradient because samples do not interact inside the model (no batch
    statistics), the same assumption as the reference implementation.

    Args:
      model: a model in the internal form, ``model(x, point) -> Prediction`` (see
        :func:`rbe_jax.core.models.as_denoiser`).
      x: ``(B, ...)`` current samples (VP scaling).
      pt: the :class:`rbe_jax.core.noise.Point` of each sample's grid point (``(B,)`` fields).
      a: ``(B,)`` alpha-bar at the current grid points.
      a_next: ``(B,)`` alpha-bar one grid step toward the data.
    Returns:
      :class:`BackwardError` with the indicator ``(B,)``, eps and the field.
    """

    def field_fn(x_):
        eps = model(x_, pt).eps
        return one_step_field(x_, eps, a, a_next), eps

    f, vjp_fn, eps = jax.vjp(field_fn, x, has_aux=True)
    (g,) = vjp_fn(2.0 * f)
    indicator = jnp.sqrt(jnp.sum(jnp.square(g), axis=tuple(range(1, x.ndim))))
    return BackwardError(indicator=indicator, eps=eps, field=f)


class StepSize(NamedTuple):
    """Output of :func:`step_size`.

    Attributes:
      h: ``(B,)`` the allowed step in alpha-bar, ``min(sqrt(tau / ||g||), 1 - a)``.
      next_index: ``(B,)`` int32 grid index after snapping down (``-1`` = clean data).
    """

    h: jax.Array
    next_index: jax.Array


def check_tau(tau) -> None:
    """Raises ``ValueError`` unless a concrete ``tau`` is a finite positive number."""
    if isinstance(tau, jax.core.Tracer):
        return
    arr = np.asarray(tau)
    if arr.size != 1 or not np.isfinite(arr).all() or float(arr) <= 0.0:
        raise ValueError(f"tau (the backward-error threshold) must be a finite number > 0, got {tau!r}")


def snap_down(alpha_bar_ext: jax.Array, index: jax.Array, a_goal: jax.Array) -> jax.Array:
    """The grid index whose alpha-bar is the largest one not exceeding ``a_goal``,
    but at least one grid step toward the data.

    Args:
      alpha_bar_ext: ``(K + 1,)`` ``[1, a_0, ..., a_{K-1}]`` (decreasing).
      index: ``(B,)`` current grid indices (``>= 0``).
      a_goal: ``(B,)`` the alpha-bar the rule allows to reach.
    Returns:
      ``(B,)`` int32 next indices in ``[-1, index - 1]``.
    """
    # ext is decreasing, so the entries above a_goal form a prefix; the first entry not above
    # it sits at position `count`, i.e. grid index count - 1.
    count = jnp.sum(alpha_bar_ext[None, :] > a_goal[:, None], axis=1).astype(jnp.int32)
    return jnp.minimum(count - 1, index.astype(jnp.int32) - 1)


def step_size(indicator: jax.Array, index: jax.Array, alpha_bar_ext: jax.Array, tau) -> StepSize:
    """The RBE step-size rule with the snap-down to the grid.

    ``h = min(sqrt(tau / ||g||), 1 - a)``; a sample whose rule allows ``h >= 1 - a`` goes
    straight to clean data (index ``-1``); otherwise it goes to the grid point with the
    largest alpha-bar not exceeding ``a + h``, at least one grid step.

    Args:
      indicator: ``(B,)`` ``||g||`` from :func:`backward_error`.
      index: ``(B,)`` current grid indices (``>= 0``).
      alpha_bar_ext: ``(K + 1,)`` ``[1, a_0, ..., a_{K-1}]``.
      tau: the threshold (> 0).
    Returns:
      :class:`StepSize`.
    """
    check_tau(tau)
    alpha_bar_ext = jnp.asarray(alpha_bar_ext, indicator.dtype)
    a = alpha_bar_ext[index + 1]
    room = 1.0 - a
    h_rule = jnp.sqrt(jnp.asarray(tau, indicator.dtype) / indicator)
    finish = h_rule >= room
    h = jnp.where(finish, room, h_rule)
    nxt = jnp.where(finish, -1, snap_down(alpha_bar_ext, index, a + h))
    return StepSize(h=h, next_index=nxt.astype(jnp.int32))
