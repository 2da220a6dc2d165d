"""Ships the learned schedules of ``bench/schedules/learned.py`` with a model where they beat the
schedule shipped today (the current ``--schedule auto``) on the bench's held-out noise.

    python bench/schedules/learned.py --model digits --nfe 5 10 --no-optimize
    python scripts/ship_learned_schedules.py --model digits [--dry-run]

For each (solver, NFE) row of bench/results/learned_<model>.json whose learned times were
kept by the guard, the learned schedule and the shipped default are scored on the bench's
test noise (same seed and size) against the same accurate solve: RMSE, median per-sample
error and the evaluation classifier's FD.  The learned one is written as
rbe_jax/zoo/pretrained/<model>/schedules/learned_nfe<N>_<solver>.json only where it has the lower
RMSE, a median no higher and an FD no higher.  Writes bench/results/ship_learned_<model>.md.
"""

import argparse
import json
from pathlib import Path

import jax
import numpy as np

import rbe_jax as R
from rbe_jax.zoo.checkpoint import pretrained_path
from rbe_jax.zoo.data import load_digits
from rbe_jax.zoo.metrics import frechet_distance, train_digit_classifier
from rbe_jax.zoo.shipped import shipped_schedule_file


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="digits")
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args()
    bench = json.loads(Path(f"bench/results/learned_{a.model}.json").read_text())
    info = R.model_info(a.model)
    ns, model = info.noise_schedule, R.load_denoiser(a.model)
    images, labels = load_digits(16)
    clf = train_digit_classifier(images, labels, seed=0)
    real_f, _ = clf.features_and_probs(images)
    n_test = 256  # bench/schedules/learned.py's default test size for the digits models
    test = R.make_teacher(model, ns, jax.random.normal(jax.random.key(202), (n_test, *info.image_shape)), 250)

    def score(s, solver):  # solver: a name or a Solver
        st = R.schedule_stats(model, s, solver, test).as_dict()
        f, _ = clf.features_and_probs(np.asarray(R.rbe_sample(model, test.noise, s, solver)))
        return dict(st, fd=frechet_distance(f, real_f))

    lines = [f"# Learned schedules shipped with {a.model}", "", f"From `{bench['meta']['command']}` ({bench['meta']['date']}); {n_test} test samples (seed 202), RMSE to a 250-step DPM-Solver++(2M) solve.", "",
             "| solver | NFE | shipped default | RMSE | median | FD | learned RMSE | median | FD | shipped? |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in bench["rows"]:
        solver, nfe = row["solver"], row["nfe"]
        made_by = dict(made_by=bench["meta"]["command"])
        co = row.get("learned_coefficients")
        if co and co["selected"] == "learned" and co["rmse"] < row["learned"]["rmse"]:  # 2M with learned coefficients
            d = R.Schedule.from_dict(row["learned_coefficients_schedule"], ns)
            learned = R.Schedule.from_lambdas(ns, np.asarray(d.lam, np.float64), method="learned", info={**d.info, **made_by, "bench_test": co})
        elif row["learned"]["selected"] == "learned":
            learned = R.Schedule.from_lambdas(ns, np.asarray(row["learned_lam"]), method="learned", info=dict(solver=solver, **made_by, bench_test=row["learned"]))
        else:
            continue
        if shipped_schedule_file(info.path, "learned", nfe, solver).is_file():
            continue  # shipped already: compare against what shipped before it
        current = R.pretrained_schedule(a.model, nfe, solver)
        c = score(current, solver)
        l = score(learned, R.learned_solver(learned) if "coefficients" in learned.info else solver)
        ok = l["rmse"] < c["rmse"] and l["median"] <= c["median"] and l["fd"] <= c["fd"]
        lines.append(f"| {solver} | {nfe} | {current.method} | {c['rmse']:.4g} | {c['median']:.4g} | {c['fd']:.3f} | {l['rmse']:.4g} | {l['median']:.4g} | {l['fd']:.3f} | {'yes' if ok else 'no'} |")
        print(lines[-1], flush=True)
        if ok and not a.dry_run:
            learned.save(shipped_schedule_file(pretrained_path(a.model), "learned", nfe, solver))
    Path(f"bench/results/ship_learned_{a.model}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
