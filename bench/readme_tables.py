"""Prints the README's result tables from the saved benchmark results (nothing is rerun):

    python bench/readme_tables.py            # after schedules_compare.py and peers.py

For each model with results: optimized vs fixed spacings and RBE, per solver (from
``bench/results/schedules_{model}.json``), and our best configuration against the best
diffusers peer and uniform DDIM with many steps (from ``bench/results/peers_{model}.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
FIXED = ("uniform", "quadratic", "logsnr", "karras")
NFES = (5, 8, 10, 15, 20)
RBE_ROWS = (("RBE", "rbe"), ("RBE, full grid", "rbe_fine"), ("RBE, local error", "rbe_local"))


def load(name: str):
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.is_file() else None


def cell(rows, nfe, solver, schedule):
    return next((r for r in rows if r["nfe"] == nfe and r["solver"] == solver and r["schedule"] == schedule), None)


def schedules_table(res, solvers=("unipc", "dpmpp2m")) -> list[str]:
    rows = res["rows"]
    nfes = [n for n in NFES if any(r["nfe"] == n for r in rows)]
    keys = [("rmse", "RMSE"), ("rmse99", "RMSE, best 99%"), ("median", "median")] + ([("fd", "FD")] if rows[0].get("fd") is not None else [])
    L = ["| solver | schedule | score | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---|---|---|" + "---|" * len(nfes)]
    for solver in solvers:
        if not any(r["solver"] == solver for r in rows):
            continue
        for key, label in keys:
            lines = {"best fixed spacing": [], **{name: [] for name, _ in RBE_ROWS}, "optimized": []}
            for n in nfes:
                col = [r for r in rows if r["nfe"] == n and r["solver"] == solver]
                bf = min((r for r in col if r["schedule"] in FIXED), key=lambda r: r[key])
                lines["best fixed spacing"].append(f"{bf[key]:.4g} ({bf['schedule']})")
                for name, sched in (*RBE_ROWS, ("optimized", "optimized")):
                    r = cell(rows, n, solver, sched)
                    if r is None:
                        lines[name].append("")
                        continue
                    ci = r.get("rmse_ratio_90") if key == "rmse" else None
                    txt = f"{r[key]:.4g} ({r[key] / bf[key]:.2f}x" + (f", {ci[0]:.2f}-{ci[1]:.2f})" if ci else ")")
                    lines[name].append(f"**{txt}**" if name == "optimized" and r[key] < bf[key] else txt)
            for name, vals in lines.items():
                if (key != "rmse" and name not in ("best fixed spacing", "optimized")) or not any(vals):
                    continue
                L.append(f"| {solver} | {name} | {label} | " + " | ".join(vals) + " |")
    return L


def peers_table(peers, ours) -> list[str]:
    nfes = [n for n in NFES if any(r["nfe"] == n for r in peers["rows"])]
    L = ["| | score | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---|---|" + "---|" * len(nfes)]
    for key, label in (("rmse", "RMSE"), ("median", "median")):
        best_peer, best_ours = [], []
        for n in nfes:
            p = min((r for r in peers["rows"] if r["nfe"] == n), key=lambda r: r[key])
            o = min((r for r in ours["rows"] if r["nfe"] == n), key=lambda r: r[key])
            best_peer.append(f"{p[key]:.4g} ({p['sampler'].split(' ', 2)[2]}, {p['sampler'].split(' ')[1]})")
            best_ours.append(f"**{o[key]:.4g}** ({o['schedule']} + {o['solver']}; {o[key] / p[key]:.2f}x)")
        L.append(f"| best diffusers peer | {label} | " + " | ".join(best_peer) + " |")
        L.append(f"| best rbe_jax configuration | {label} | " + " | ".join(best_ours) + " |")
    return L


def ddim_line(peers, ours) -> str:
    d = {r["nfe"]: r for r in peers["ddim"]}
    o10 = [r for r in ours["rows"] if r["nfe"] == 10 and r["schedule"] == "optimized" and r["solver"] == "unipc"]
    txt = "uniform DDIM: " + ", ".join(f"{k} steps RMSE {v['rmse']:.4g} / median {v['median']:.4g}" for k, v in sorted(d.items()))
    if o10:
        txt += f"; optimized + UniPC at 10 NFE: RMSE {o10[0]['rmse']:.4g} / median {o10[0]['median']:.4g}"
    return txt


def main():
    for name in ("gmm", "digits", "digits_cond_w2"):
        res = load(f"schedules_{name}")
        if res is None:
            continue
        fd = res["meta"].get("reference_fd")
        print(f"## {name}: {res['meta']['date']}, {res['meta']['machine']}, test {res['meta']['test']}, calibration {res['meta']['calib']}"
              + (f", FD of the reference samples {fd:.2f}" if fd is not None else "") + "\n")
        print("\n".join(schedules_table(res)) + "\n")
        peers = load(f"peers_{name}")
        if peers is not None and peers["meta"]["test"] == res["meta"]["test"]:
            print("\n".join(peers_table(peers, res)) + "\n")
            print(ddim_line(peers, res) + "\n")


if __name__ == "__main__":
    main()
