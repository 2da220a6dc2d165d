"""Run in a subprocess with 4 host CPU devices: sharded batches give the unsharded results."""

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

import rbe_jax as R  # noqa: E402

assert len(jax.devices()) == 4, jax.devices()
sharding = NamedSharding(Mesh(np.array(jax.devices()), ("batch",)), P("batch"))
ns = R.NoiseSchedule.linear()
grid = ns.respace(100)
gm = R.testing.GaussianMixture.random(0, 8, 6, ns)
noise = jax.random.normal(jax.random.key(0), (64, 8))
sharded = jax.device_put(noise, sharding)

for solver in (R.ddim(), R.dpmpp2m()):
    s = R.baseline_schedule(grid, 10, "logsnr")
    a = jax.jit(R.rbe_sample)(gm, noise, s, solver)
    b = jax.jit(R.rbe_sample)(gm, sharded, s, solver)
    assert b.sharding.is_equivalent_to(sharding, b.ndim), b.sharding
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)

r1 = R.adaptive_paths(gm, grid, noise, 0.3)
r2 = R.adaptive_paths(gm, grid, sharded, 0.3)
assert r2.samples.sharding.is_equivalent_to(sharding, 2) and r2.paths.sharding.is_equivalent_to(sharding, 2)
np.testing.assert_array_equal(np.asarray(r1.paths), np.asarray(r2.paths))
np.testing.assert_allclose(np.asarray(r1.samples), np.asarray(r2.samples), rtol=1e-6, atol=1e-6)

c1 = R.calibrate(gm, grid, noise, 8)
c2 = R.calibrate(gm, grid, sharded, 8)
assert c1.indices.tolist() == c2.indices.tolist() and c1.tau == c2.tau
print("SHARDED OK")
