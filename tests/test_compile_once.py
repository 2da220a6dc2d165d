"""Compile once in every model pattern the README and docs/families.md show: a model wrapper
rebuilt on every call (as a user's sampling function does) with new parameter values of the
same structure traces the network once, under ``jax.jit(R.rbe_sample)`` and eagerly."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import rbe_jax as R

TRACES = []


class LinenEps(nn.Module):
    width: int = 16

    @nn.compact
    def __call__(self, x, t):
        TRACES.append("linen")  # runs at trace time only
        h = jnp.concatenate([x, (t[:, None] / 1000.0).astype(x.dtype)], axis=-1)
        return nn.Dense(x.shape[-1])(nn.tanh(nn.Dense(self.width)(h)))


class NNXEps(nnx.Module):
    def __init__(self, dim, rngs):
        self.lin = nnx.Linear(dim + 1, dim, rngs=rngs)

    def __call__(self, x, t):
        TRACES.append("nnx")
        return self.lin(jnp.concatenate([x, (t[:, None] / 1000.0).astype(x.dtype)], axis=-1))


class EqxEps(eqx.Module):
    mlp: eqx.nn.MLP  # holds its activation functions as pytree leaves

    def __init__(self, dim, key):
        self.mlp = eqx.nn.MLP(dim + 1, dim, 16, 2, activation=jax.nn.gelu, key=key)

    def __call__(self, x, t):
        TRACES.append("eqx")
        h = jnp.concatenate([x, (t[:, None] / 1000.0).astype(x.dtype)], axis=-1)
        return jax.vmap(self.mlp)(h)


def plain_fn(params, x, t):
    TRACES.append("plain")
    return jnp.tanh(x @ params["w"]) * (t[:, None] / 1000.0) + params["b"]


def eqx_apply(module, x, t):
    return module(x, t)


def _linen(seed):
    mod = LinenEps()
    return R.as_model(mod.apply, mod.init(jax.random.key(seed), jnp.zeros((2, 8)), jnp.zeros((2,))))


def _linen_new_module(seed):  # an equal module object built anew each time (its own width:
    mod = LinenEps(width=12)  # no other pattern of this file compiles this network)
    return R.as_model(mod.apply, mod.init(jax.random.key(seed), jnp.zeros((2, 8)), jnp.zeros((2,))))


def _linen_bound(seed):  # the apply read from one module object twice
    return R.as_model(_LINEN.apply, _LINEN.init(jax.random.key(seed), jnp.zeros((2, 8)), jnp.zeros((2,))))


_LINEN = LinenEps()

PATTERNS = {
    "linen apply": _linen_bound,
    "linen apply, module rebuilt": _linen_new_module,
    "nnx module": lambda seed: NNXEps(8, nnx.Rngs(seed)),
    "plain function with params": lambda seed: R.as_model(plain_fn, {"w": jax.random.normal(jax.random.key(seed), (8, 8)) * 0.1, "b": jnp.zeros((8,))}),
    "equinox module": lambda seed: R.as_model(EqxEps(8, jax.random.key(seed))),
    "equinox module as params": lambda seed: R.as_model(eqx_apply, EqxEps(8, jax.random.key(seed))),
}


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_rebuilt_model_traces_once(pattern, grid, noise8):
    """Three wrappers of one architecture with other parameter values, on one schedule (that
    other schedules of one length share the compilation too is the step contract's issue)."""
    models = [PATTERNS[pattern](seed) for seed in range(3)]  # (Linen's init traces the network too)
    sched = R.baseline_schedule(grid, 5, "logsnr")
    sample = jax.jit(R.rbe_sample)
    solver = R.unipc()
    TRACES.clear()
    outs = []
    for model in models:
        outs.append(np.asarray(sample(model, noise8, sched, solver)))
        np.testing.assert_allclose(R.rbe_sample(model, noise8, sched, solver), outs[-1], rtol=1e-5, atol=1e-5)
    assert len(TRACES) == 1, f"{pattern}: the network was traced {len(TRACES)} times for 3 rebuilt models"
    assert not np.allclose(outs[0], outs[1])  # other parameters did reach the compiled code


def test_equal_linen_wrappers_have_equal_structure():
    a, b = _linen(0), _linen(1)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    assert hash(jax.tree_util.tree_structure(a)) == hash(jax.tree_util.tree_structure(b))
    other = LinenEps(width=8)
    c = R.as_model(other.apply, other.init(jax.random.key(0), jnp.zeros((2, 8)), jnp.zeros((2,))))
    assert jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(c)  # another module: another key


def test_an_equinox_module_samples_like_its_own_call(grid, noise8):
    """The split keeps the module's functions: one hand-written DDIM step agrees."""
    m = EqxEps(8, jax.random.key(3))
    sched = R.baseline_schedule(grid, 1, "uniform")
    got = R.rbe_sample(R.as_model(m), noise8, sched, R.ddim())
    eps = m(noise8, jnp.full((64,), float(sched.model_times[0]), jnp.float32))
    a = float(sched.alpha_bar[0])
    np.testing.assert_allclose(got, (noise8 - np.sqrt(1 - a) * eps) / np.sqrt(a), rtol=1e-4, atol=1e-4)
