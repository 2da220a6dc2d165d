import json

import numpy as np
import pytest
from PIL import Image

import rbe_jax as R
from rbe_jax.zoo.checkpoint import save_model
from rbe_jax.app.cli import main

from test_checkpoint import SPEC, _random_tiny


def test_sample_writes_png_and_npz(tiny_dir, tmp_path, capsys):
    out, npz = tmp_path / "s.png", tmp_path / "s.npz"
    rc = main(["sample", "--checkpoint", str(tiny_dir), "--nfe", "4", "--schedule", "logsnr", "--solver", "dpmpp2m", "--n", "6", "--out", str(out), "--npz", str(npz)])
    assert rc == 0
    img = Image.open(out)
    assert img.size[0] > 16 and img.size[1] > 16
    d = np.load(npz)
    assert d["samples"].shape == (6, 8, 8, 1) and np.isposinf(d["log_snr"][-1]) and len(d["log_snr"]) == 5
    assert len(d["model_times"]) == 4 and d["model_times"][0] == 999.0 and d["alpha_bar"][-1] == 1.0
    assert "nfe=4" in capsys.readouterr().out


def test_same_seed_same_samples(tiny_dir, tmp_path):
    for k in ("a", "b"):
        assert main(["sample", "--checkpoint", str(tiny_dir), "--nfe", "3", "--schedule", "uniform", "--n", "3", "--seed", "7", "--out", str(tmp_path / f"{k}.png"), "--npz", str(tmp_path / f"{k}.npz")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npz")["samples"], np.load(tmp_path / "b.npz")["samples"])


def test_calibrate_then_sample_from_file_and_info(tiny_dir, tmp_path, capsys):
    sched = tmp_path / "sched.json"
    assert main(["calibrate", "--checkpoint", str(tiny_dir), "--nfe", "5", "--n", "16", "--out", str(sched)]) == 0
    s = R.Schedule.load(sched)
    assert s.nfe == 5 and s.method == "rbe" and s.meta.K == 20
    assert main(["sample", "--checkpoint", str(tiny_dir), "--nfe", "5", "--schedule", str(sched), "--n", "2", "--out", str(tmp_path / "x.png")]) == 0
    capsys.readouterr()
    assert main(["info", str(sched)]) == 0
    assert json.loads(capsys.readouterr().out)["nfe"] == 5
    assert main(["info", str(tiny_dir)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "model" and info["config"]["base_channels"] == 8


def test_cli_choices_match_the_library():
    from rbe_jax.app import cli
    from rbe_jax.rbe.calibration import RULES
    from rbe_jax.core.solvers import SOLVERS

    assert set(cli.SOLVER_NAMES) == set(SOLVERS) and set(cli.RULE_NAMES) == set(RULES)


def test_calibrate_with_the_local_error_rule(tiny_dir, tmp_path, capsys):
    sched = tmp_path / "sched.json"
    assert main(["calibrate", "--checkpoint", str(tiny_dir), "--nfe", "4", "--n", "16", "--rule", "local_error", "--out", str(sched)]) == 0
    assert "rule=local_error" in capsys.readouterr().out
    s = R.Schedule.load(sched)
    assert s.nfe == 4 and s.method == "rbe" and s.info["rule"] == "local_error"
    assert main(["calibrate", "--checkpoint", str(tiny_dir), "--method", "optimized", "--rule", "local_error", "--nfe", "3", "--out", str(sched)]) == 2
    assert "--tau and --rule apply to --method rbe only" in capsys.readouterr().err


def test_rbe_without_shipped_schedule_calibrates_and_says_so(tiny_dir, tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(tiny_dir), "--nfe", "3", "--n", "2", "--out", str(tmp_path / "x.png")]) == 0
    assert "calibrating" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["sample", "--nfe", "0"], "--nfe: must be >= 1"),
        (["sample", "--nfe", "ten"], "expected an integer"),
        (["sample", "--solver", "euler"], "invalid choice"),
        (["sample", "--bogus"], "unrecognized arguments"),
        (["calibrate", "--out", "x.json"], "required: --nfe"),
        (["calibrate", "--nfe", "3", "--out", "x.json", "--tau", "-1"], "--tau: must be a finite number > 0"),
        ([], "required"),
    ],
)
def test_bad_arguments_one_line_no_traceback(argv, msg, capsys):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_paths_one_line(tiny_dir, tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "x.png")]) == 1
    assert "model directory not found" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(tiny_dir), "--schedule", "cosine", "--out", str(tmp_path / "x.png")]) == 2
    assert "--schedule must be one of" in capsys.readouterr().err
    foreign = R.baseline_schedule(R.NoiseSchedule.cosine(1000).respace(20), 4, "uniform").save(tmp_path / "f.json")
    assert main(["sample", "--checkpoint", str(tiny_dir), "--schedule", str(foreign), "--out", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert "made for noise process" in err and "cosine" in err and len(err.strip().splitlines()) == 1
    assert main(["info", str(tmp_path / "missing.json")]) == 1
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(tiny_dir), "--label", "3", "--out", str(tmp_path / "x.png")]) == 2
    assert "needs a class-conditional model" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(tiny_dir), "--guidance", "2", "--out", str(tmp_path / "x.png")]) == 2
    assert "--guidance needs --label" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_cond_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cond") / "model"
    save_model(path, _random_tiny("tiny_cond_unet"), noise_schedule_spec=SPEC, meta={"grid_K": 20})
    return path


def test_conditional_sampling_with_guidance(tiny_cond_dir, tmp_path, capsys):
    from rbe_jax.zoo.checkpoint import load_model

    model = load_model(tiny_cond_dir)
    import jax
    import jax.numpy as jnp

    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    t = jnp.asarray([10, 500])
    assert not np.allclose(model(x, t, jnp.asarray([1, 1])), model(x, t, jnp.asarray([7, 7])))
    np.testing.assert_allclose(model(x, t), model(x, t, jnp.asarray([10, 10])), rtol=1e-6)  # no label = class 10
    outs = []
    for w in ("0", "2.0"):
        npz = tmp_path / f"g{w}.npz"
        assert main(["sample", "--checkpoint", str(tiny_cond_dir), "--nfe", "3", "--schedule", "uniform", "--n", "4", "--label", "3", "--guidance", w, "--out", str(tmp_path / "g.png"), "--npz", str(npz)]) == 0
        outs.append(np.load(npz)["samples"])
    assert not np.allclose(outs[0], outs[1])
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(tiny_cond_dir), "--label", "12", "--out", str(tmp_path / "g.png")]) == 2
    assert "--label must be in [0, 9]" in capsys.readouterr().err


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_output_paths_are_checked_before_any_work(tiny_dir, tmp_path, capsys):
    keep = tmp_path / "keep.png"
    keep.write_bytes(b"precious")
    (tmp_path / "afile").write_text("x")
    a_dir = tmp_path / "dir.png"
    a_dir.mkdir()
    missing_model = str(tmp_path / "no_model")  # an error about it would mean work began
    cases = [
        (["--out", str(tmp_path / "noext")], "must end in .png"),
        (["--out", str(a_dir)], "is a directory"),
        (["--out", str(keep), "--npz", str(tmp_path / "afile" / "x.npz")], "is not a directory"),
        (["--out", str(keep), "--npz", str(tmp_path / "x.txt")], "must end in .npz"),
        (["--out", str(keep), "--npz", str(keep)], "must end in .npz"),
    ]
    for extra, msg in cases:
        assert main(["sample", "--checkpoint", missing_model, *extra]) == 2
        assert msg in _one_line(capsys)
    assert main(["calibrate", "--checkpoint", missing_model, "--nfe", "3", "--out", str(tmp_path / "s.txt")]) == 2
    assert "must end in .json" in _one_line(capsys)
    assert keep.read_bytes() == b"precious"


def test_a_failed_run_leaves_existing_files_untouched(tiny_dir, tmp_path, capsys, monkeypatch):
    import rbe_jax.core.sampler

    keep, npz = tmp_path / "keep.png", tmp_path / "new" / "x.npz"
    keep.write_bytes(b"precious")

    def fails(*a, **k):
        raise FloatingPointError("NaN/Inf during sampling: first for sample 0 at step 1")

    monkeypatch.setattr(rbe_jax.core.sampler, "rbe_sample", fails)
    assert main(["sample", "--checkpoint", str(tiny_dir), "--nfe", "2", "--schedule", "uniform", "--n", "2", "--out", str(keep), "--npz", str(npz)]) == 1
    assert "NaN/Inf during sampling" in _one_line(capsys)
    assert keep.read_bytes() == b"precious" and not npz.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    monkeypatch.undo()
    assert main(["sample", "--checkpoint", str(tiny_dir), "--nfe", "2", "--schedule", "uniform", "--n", "2", "--out", str(keep), "--npz", str(npz)]) == 0
    assert keep.read_bytes() != b"precious" and np.load(npz)["samples"].shape == (2, 8, 8, 1)  # missing folder created


@pytest.mark.parametrize("w", ["nan", "inf", "-5", "-0.1"])
def test_guidance_must_be_finite_and_non_negative(w, capsys):
    assert main(["sample", "--label", "3", "--guidance", w]) == 2
    assert "--guidance: must be a finite number >= 0" in _one_line(capsys)


def test_version_and_info_of_shipped_models(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"rbe-jax {R.__version__}"
    from rbe_jax.zoo.checkpoint import pretrained_path

    for name in ("digits", "digits_cond"):
        assert main(["info", name]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["kind"] == "model" and out["path"] == str(pretrained_path(name).absolute())
    assert main(["info", "no_such_model"]) == 1
    assert "shipped models: digits, digits_cond" in _one_line(capsys)


def test_baselines_run_at_any_nfe(tiny_dir, tmp_path, capsys):
    """Baselines are placed in continuous time: the reference run at the training length,
    and beyond it (fractional timesteps)."""
    npz = tmp_path / "ref.npz"
    assert main(["sample", "--checkpoint", str(tiny_dir), "--nfe", "1000", "--schedule", "uniform", "--n", "1", "--out", str(tmp_path / "r.png"), "--npz", str(npz)]) == 0
    t = np.load(npz)["model_times"]
    assert len(t) == 1000 and t[0] == 999 and np.all(np.diff(t) < 0)
    assert main(["sample", "--checkpoint", str(tiny_dir), "--nfe", "1200", "--schedule", "logsnr", "--n", "1", "--out", str(tmp_path / "r.png"), "--npz", str(npz)]) == 0
    assert len(np.load(npz)["model_times"]) == 1200
    assert main(["sample", "--checkpoint", str(tiny_dir), "--nfe", "3", "--schedule", "shift"]) == 2
    assert "--schedule shift: the 'shift' spacing is for flow models" in _one_line(capsys)


def test_guided_schedules_are_calibrated_once_and_cached(tiny_cond_dir, tmp_path, capsys, monkeypatch):
    from rbe_jax.app.cache import cached_schedule_path

    monkeypatch.setenv("RBE_JAX_CACHE", str(tmp_path / "cache"))
    argv = ["sample", "--checkpoint", str(tiny_cond_dir), "--nfe", "4", "--n", "2", "--label", "3", "--guidance", "1.5", "--out", str(tmp_path / "g.png")]
    assert main(argv) == 0
    assert "calibrating" in capsys.readouterr().err
    cached = cached_schedule_path(tiny_cond_dir, "rbe_nfe4_label3_w1.5_unipc.json")
    assert cached.is_file() and R.Schedule.load(cached).nfe == 4
    assert main(argv) == 0
    assert "calibrating" not in capsys.readouterr().err  # the second identical call reuses it
    out = tmp_path / "c.json"
    assert main(["calibrate", "--checkpoint", str(tiny_cond_dir), "--nfe", "4", "--n", "16", "--label", "3", "--guidance", "1.5", "--out", str(out)]) == 0
    assert R.Schedule.load(out).nfe == 4
    capsys.readouterr()
    assert main(["calibrate", "--checkpoint", str(tiny_cond_dir), "--nfe", "4", "--out", str(out), "--guidance", "2"]) == 2
    assert "--guidance needs --label" in _one_line(capsys)


def test_calibrate_an_optimized_schedule_and_sample_with_it(tiny_dir, tmp_path, capsys):
    out = tmp_path / "opt.json"
    assert main(["calibrate", "--checkpoint", str(tiny_dir), "--method", "optimized", "--solver", "unipc", "--nfe", "2", "--n", "2", "--out", str(out)]) == 0
    s = R.Schedule.load(out)
    assert s.method == "optimized" and s.info["solver"] == "unipc" and s.meta.K == 1000  # the full training schedule
    assert "optimized for unipc" in capsys.readouterr().out
    assert main(["sample", "--checkpoint", str(tiny_dir), "--nfe", "2", "--solver", "unipc", "--schedule", str(out), "--n", "2", "--out", str(tmp_path / "o.png")]) == 0
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(tiny_dir), "--nfe", "3", "--schedule", "optimized", "--out", str(tmp_path / "o.png")]) == 2
    assert "rbe-jax calibrate --method optimized" in _one_line(capsys)
    assert main(["calibrate", "--checkpoint", str(tiny_dir), "--method", "optimized", "--tau", "1", "--nfe", "3", "--out", str(out)]) == 2
    assert "--tau and --rule apply to --method rbe only" in _one_line(capsys)


def test_guided_sampling_uses_an_optimized_schedule_shipped_for_its_weight(tiny_cond_dir, tmp_path, capsys, monkeypatch):
    """Optimized schedules ship per guidance weight, for any label
    (``optimized_nfe{N}_{solver}_w{w}.json``): auto picks the one for --guidance."""
    import shutil

    monkeypatch.setenv("RBE_JAX_CACHE", str(tmp_path / "cache"))
    ckpt = tmp_path / "model"
    shutil.copytree(tiny_cond_dir, ckpt)
    made = tmp_path / "opt.json"
    assert main(["calibrate", "--checkpoint", str(ckpt), "--method", "optimized", "--nfe", "2", "--n", "2", "--label", "1", "--guidance", "2", "--out", str(made)]) == 0
    (ckpt / "schedules").mkdir(exist_ok=True)
    shutil.copy(made, ckpt / "schedules" / "optimized_nfe2_unipc_w2.json")
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(ckpt), "--nfe", "2", "--n", "2", "--label", "5", "--guidance", "2", "--out", str(tmp_path / "g.png")]) == 0
    assert "optimized schedule, nfe=2, solver=unipc" in capsys.readouterr().out
    assert main(["sample", "--checkpoint", str(ckpt), "--nfe", "2", "--n", "2", "--label", "5", "--guidance", "1", "--schedule", "optimized", "--out", str(tmp_path / "g.png")]) == 2
    assert "--label 5 --guidance 1 --out FILE.json" in _one_line(capsys)


def test_shipped_models_by_name_and_their_guided_optimized_schedules(tmp_path, capsys, monkeypatch):
    """``--checkpoint digits_cond`` names the shipped model (as ``info`` does); guided sampling
    at w = 2 uses the optimized UniPC schedule shipped for that weight, any label."""
    monkeypatch.setenv("RBE_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # no directory called digits_cond here
    assert main(["sample", "--checkpoint", "digits_cond", "--label", "7", "--guidance", "2", "--nfe", "5", "--n", "2", "--out", "g.png"]) == 0
    assert "optimized schedule, nfe=5, solver=unipc" in capsys.readouterr().out
    assert (tmp_path / "g.png").is_file()


@pytest.mark.parametrize("nfe, solver, label", [(5, "dpmpp2m", None), (8, "unipc", 4)])
def test_auto_samples_what_pretrained_schedule_returns(nfe, solver, label, tmp_path, capsys):
    """``--schedule auto`` is R.pretrained_schedule: the same samples for the same seed, from
    Python and from the CLI (the learned 2M schedule with its coefficients; a guided model's
    optimized UniPC schedule for its weight); the faithful RBE sampler stays one flag away."""
    import jax

    name = "digits" if label is None else "digits_cond"
    npz = tmp_path / "s.npz"
    args = ["sample", "--checkpoint", name, "--nfe", str(nfe), "--solver", solver, "--n", "4", "--seed", "3", "--out", str(tmp_path / "s.png"), "--npz", str(npz)]
    guide = [] if label is None else ["--label", str(label), "--guidance", "2"]
    assert main(args + guide) == 0
    s = R.pretrained_schedule(name, nfe, solver, None if label is None else 2.0)
    assert f"{s.method} schedule, nfe={nfe}" in capsys.readouterr().out and s.method in ("optimized", "learned")
    model = R.load_denoiser(name, label=label, guidance=0.0 if label is None else 2.0)
    noise = jax.random.normal(jax.random.key(3), (4, 16, 16, 1))
    x = R.rbe_sample(model, noise, s, R.learned_solver(s) if s.info.get("coefficients") else solver)
    np.testing.assert_array_equal(np.load(npz)["samples"], np.asarray(x))
    if label is None:
        assert main(["sample", "--nfe", str(nfe), "--n", "4", "--schedule", "rbe", "--solver", "ddim", "--out", str(tmp_path / "s.png")]) == 0
        assert f"rbe schedule, nfe={nfe}, solver=ddim" in capsys.readouterr().out


def test_the_shipped_flow_model(tmp_path, capsys, monkeypatch):
    """``--checkpoint digits_flow``: the rectified-flow model with its optimized UniPC
    schedule, SD3's Euler with shift, and its RBE schedule; ``info`` names its process."""
    monkeypatch.chdir(tmp_path)
    npz = tmp_path / "f.npz"
    assert main(["sample", "--checkpoint", "digits_flow", "--nfe", "10", "--n", "4", "--out", "f.png", "--npz", str(npz)]) == 0
    assert "optimized schedule, nfe=10, solver=unipc" in capsys.readouterr().out
    d = np.load(npz)
    assert np.isneginf(d["log_snr"][0]) and d["model_times"][0] == 1000.0  # from pure noise, fed 1000 t
    assert main(["sample", "--checkpoint", "digits_flow", "--nfe", "6", "--schedule", "shift", "--solver", "ddim", "--n", "2", "--out", "f.png"]) == 0
    assert "shift schedule, nfe=6, solver=ddim" in capsys.readouterr().out
    assert main(["sample", "--checkpoint", "digits_flow", "--nfe", "8", "--schedule", "rbe", "--n", "2", "--out", "f.png"]) == 0
    assert "rbe schedule, nfe=8" in capsys.readouterr().out
    assert main(["info", "digits_flow"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["noise_schedule"]["kind"] == "flow" and out["prediction"] == "velocity"


def test_calibrate_a_learned_schedule_and_sample_with_it(tiny_dir, tmp_path, capsys):
    out = tmp_path / "learned.json"
    argv = ["calibrate", "--checkpoint", str(tiny_dir), "--method", "learned", "--nfe", "3", "--n", "8", "--steps", "4", "--teacher-steps", "20", "--out", str(out)]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert f"wrote {out}" in said and "held-out samples RMSE" in said and "model evaluations" in said
    s = R.Schedule.load(out)
    assert s.method == "learned" and s.nfe == 3 and s.info["held_out_samples"] == 2 and s.info["teacher_steps"] == 20
    assert main(["sample", "--checkpoint", str(tiny_dir), "--nfe", "3", "--schedule", str(out), "--n", "2", "--out", str(tmp_path / "x.png")]) == 0
    assert main(["calibrate", "--checkpoint", str(tiny_dir), "--method", "learned", "--nfe", "3", "--n", "4", "--out", str(out)]) == 2
    assert "at least 8 calibration samples" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(tiny_dir), "--nfe", "3", "--schedule", "learned", "--out", str(tmp_path / "x.png")]) == 2
    assert "no shipped learned schedule" in capsys.readouterr().err
    assert main(["calibrate", "--checkpoint", str(tiny_dir), "--method", "learned", "--coefficients", "--nfe", "3", "--out", str(out)]) == 2
    assert "--solver dpmpp2m" in capsys.readouterr().err


@pytest.mark.parametrize("seed", ["18446744073709551617", "-1", "1.5"])
def test_a_seed_that_does_not_fit_is_one_line(seed, capsys):
    assert main(["sample", "--seed", seed, "--nfe", "2", "--out", "x.png"]) == 2
    assert "--seed" in _one_line(capsys)


def test_a_manifest_that_is_not_an_object_is_named(tmp_path, tiny_dir, capsys):
    (tmp_path / "manifest.json").write_text("[1, 2]")
    rc = main(["sample", "--checkpoint", str(tiny_dir), "--nfe", "2", "--schedule", "uniform", "--n", "4", "--batch", "2", "--out-dir", str(tmp_path)])
    assert rc != 0 and "manifest.json: expected a JSON object, found a list" in _one_line(capsys)
