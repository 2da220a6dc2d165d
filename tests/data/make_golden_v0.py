# Ran once at commit fb00a74 (the integer-grid core, before the continuous-time rewrite);
# kept as the record of how tests/data/golden_v0.npz was made.  It uses that version's API.
"""Golden outputs of the integer-grid core (before the continuous-time rewrite): RBE paths,
calibrated schedules and samples, to check that the faithful mode stays bit-exact."""
import jax, jax.numpy as jnp, numpy as np
import rbe_jax as R
from rbe_jax.zoo.checkpoint import load_model_info, pretrained_path

out = {}
linear = R.NoiseSchedule.linear(1000)
grid = linear.respace(100)
gm = R.testing.GaussianMixture.random(0, 8, 6, linear)
noise = jax.random.normal(jax.random.key(0), (64, 8), jnp.float32)
for tau in (0.05, 0.3, 2.0):
    r = R.adaptive_paths(gm, grid, noise, tau)
    out[f"gmm_paths_tau{tau}"] = np.asarray(r.paths)
    out[f"gmm_samples_tau{tau}"] = np.asarray(r.samples)
r = R.local_error_paths(gm, grid, noise, 0.01)
out["gmm_local_paths"] = np.asarray(r.paths)
out["gmm_local_evals"] = np.asarray(r.evals)
for nfe in (5, 10):
    s = R.calibrate(gm, grid, noise, nfe)
    out[f"gmm_calib_nfe{nfe}_indices"] = np.asarray(s.indices)
    out[f"gmm_calib_nfe{nfe}_tau"] = np.asarray(s.tau)
    s = R.calibrate(gm, grid, noise, nfe, rule="local_error")
    out[f"gmm_calib_local_nfe{nfe}_indices"] = np.asarray(s.indices)
    out[f"gmm_calib_local_nfe{nfe}_tau"] = np.asarray(s.tau)
    for solver in ("ddim", "dpmpp2m", "dpmpp3m", "unipc"):
        out[f"gmm_sample_nfe{nfe}_{solver}"] = np.asarray(R.rbe_sample(gm, noise, s, solver))

model = R.load_pretrained("digits")
info = load_model_info(pretrained_path("digits"))
dgrid = info.default_grid
z = jax.random.normal(jax.random.key(5), (8, 16, 16, 1))
r = R.adaptive_paths(model, dgrid, z, 0.5)
out["digits_paths_tau0.5"] = np.asarray(r.paths)
s = R.calibrate(model, dgrid, z, 8, search_samples=8)
out["digits_calib_nfe8_indices"] = np.asarray(s.indices)
out["digits_calib_nfe8_tau"] = np.asarray(s.tau)
sched = R.Schedule.load(pretrained_path("digits") / "schedules" / "rbe_nfe10.json", dgrid)
opt = R.Schedule.load(pretrained_path("digits") / "schedules" / "optimized_nfe10_unipc.json", info.noise_schedule)
for solver in ("ddim", "unipc"):
    out[f"digits_rbe10_{solver}"] = np.asarray(R.rbe_sample(model, z, sched, solver))
out["digits_opt10_unipc"] = np.asarray(R.rbe_sample(model, z, opt, "unipc"))
np.savez_compressed("/tmp/golden/golden_v0.npz", **out)
print({k: v.shape for k, v in out.items()})
