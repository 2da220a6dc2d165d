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

# --- the shipped model (restored from its checkpoint) with a batch sharded over the mesh
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from rbe_jax.zoo.checkpoint import load_model_info, pretrained_path  # noqa: E402

info = load_model_info(pretrained_path("digits"))
dgrid = info.default_grid
model = R.load_pretrained("digits")
x = jax.random.normal(jax.random.key(1), (8, *info.image_shape))
xs = jax.device_put(x, sharding)
sched = R.Schedule.load(pretrained_path("digits") / "schedules" / "rbe_nfe5.json", dgrid)
want = np.asarray(R.rbe_sample(model, x, sched))
for name, out in (
    ("jit", jax.jit(R.rbe_sample)(model, xs, sched)),
    ("eager", R.rbe_sample(model, xs, sched)),
    ("eager, model committed to device 0", R.rbe_sample(R.load_pretrained("digits", sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])), xs, sched)),
    ("model on device 0, noise committed to device 1", R.rbe_sample(R.load_pretrained("digits", sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])), jax.device_put(x, jax.devices()[1]), sched)),
    ("model replicated with sharding=", jax.jit(R.rbe_sample)(R.load_pretrained("digits", sharding=NamedSharding(sharding.mesh, P())), xs, sched)),
):
    if "device 1" in name:
        assert out.sharding.device_set == {jax.devices()[1]}, (name, out.sharding)
    else:
        assert out.sharding.is_equivalent_to(sharding, out.ndim), (name, out.sharding)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-4, atol=1e-4, err_msg=name)
c = R.calibrate(model, dgrid, xs, 4, search_samples=8)
assert c.nfe == 4 and c.indices.tolist() == R.calibrate(model, dgrid, x, 4, search_samples=8).indices.tolist()
with tempfile.TemporaryDirectory() as d:
    m = R.sample_job(model, sched, 12, 8, d, image_shape=info.image_shape, sharding=sharding, progress=False)
    assert len(m["shards"]) == 2 and all((Path(d) / v["file"]).is_file() for v in m["shards"].values())
print("SHIPPED MODEL SHARDED OK")
