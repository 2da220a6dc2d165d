"""One of two processes of a jax.distributed run on localhost (CPU, gloo collectives).

Usage: distributed_worker.py PROCESS_ID PORT.  Each process holds half of a global batch;
rbe_sample, adaptive_paths and calibrate on the global array must give, on each process's
half, the single-process results.
"""

import sys

import jax

pid, port = int(sys.argv[1]), sys.argv[2]
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)

import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

import rbe_jax as R  # noqa: E402

assert jax.process_count() == 2 and len(jax.devices()) == 2
sharding = NamedSharding(Mesh(np.array(jax.devices()), ("batch",)), P("batch"))
ns = R.NoiseSchedule.linear()
grid = ns.respace(100)
gm = R.testing.GaussianMixture.random(0, 8, 6, ns)
noise = np.asarray(jax.random.normal(jax.random.key(0), (64, 8)))  # the same on both processes
half = slice(32 * pid, 32 * (pid + 1))
g = jax.make_array_from_process_local_data(sharding, noise[half], noise.shape)


def local(x):
    return np.concatenate([np.asarray(s.data) for s in x.addressable_shards])


sched = R.baseline_schedule(grid, 10, "logsnr")
out = jax.jit(R.rbe_sample)(gm, g, sched, R.dpmpp2m())
with jax.default_device(jax.local_devices()[0]):
    ref = np.asarray(jax.jit(R.rbe_sample)(gm, jax.device_put(noise, jax.local_devices()[0]), sched, R.dpmpp2m()))
np.testing.assert_allclose(local(out), ref[half], rtol=1e-6, atol=1e-6)

res = R.adaptive_paths(gm, grid, g, 0.3)
with jax.default_device(jax.local_devices()[0]):
    res1 = R.adaptive_paths(gm, grid, jax.device_put(noise, jax.local_devices()[0]), 0.3)
np.testing.assert_array_equal(local(res.paths), np.asarray(res1.paths)[half])

s_multi = R.calibrate(gm, grid, g, 8)
with jax.default_device(jax.local_devices()[0]):
    s_single = R.calibrate(gm, grid, jax.device_put(noise, jax.local_devices()[0]), 8)
assert s_multi.indices.tolist() == s_single.indices.tolist(), (s_multi, s_single)
print(f"PROCESS {pid} OK", flush=True)
