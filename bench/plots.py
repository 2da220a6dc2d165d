"""Draws the README's plots from the benchmark results (matplotlib; the bench extra).

    python bench/plots.py      # reads bench/results/{gmm,digits}.json and digits_nfe8.npz

Writes docs/gmm_rmse_vs_nfe.png, docs/digits_fd_vs_nfe.png, docs/schedules.png and
docs/digits_nfe8_grids.png (each skipped, with a note, if its input is missing).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import rbe_jax as R  # noqa: E402
from rbe_jax.zoo.checkpoint import load_model_info, pretrained_path  # noqa: E402

RES, DOCS = Path("bench/results"), Path("docs")
STYLE = {"uniform": "tab:gray", "quadratic": "tab:blue", "logsnr": "tab:green", "rbe": "tab:red"}
LINE = {"ddim": "--", "dpmpp2m": "-"}


def gmm_plot():
    d = json.loads((RES / "gmm.json").read_text())
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for solver in LINE:
        for kind in STYLE:
            rs = sorted((r["nfe"], r["rmse"]) for r in d["rows"] if r["kind"] == kind and r["solver"] == solver)
            ax.plot(*zip(*rs), LINE[solver], color=STYLE[kind], marker="o", ms=3, label=f"{kind} + {solver}")
    for r in d["rows"]:
        if r["kind"] == "uniform(K=1000)":
            ax.axhline(r["rmse"], color="k", lw=0.6, ls=":")
            ax.text(71, r["rmse"], f"DDIM {r['nfe']}", fontsize=7, va="center")
    ax.set(xscale="log", yscale="log", xlabel="NFE", ylabel="RMSE to the exact ODE solution", title="Gaussian mixture (32-d, exact reference)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(DOCS / "gmm_rmse_vs_nfe.png", dpi=120)


def digits_plot():
    d = json.loads((RES / "digits.json").read_text())
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for solver in LINE:
        for kind in STYLE:
            rs = sorted((r["nfe"], r["fd"], r["fd_boot_std"]) for r in d["rows"] if r["schedule"] == kind and r["solver"] == solver)
            n, fd, sd = zip(*rs)
            ax.errorbar(n, fd, yerr=sd, fmt=LINE[solver], color=STYLE[kind], marker="o", ms=3, capsize=2, label=f"{kind} + {solver}")
    for r in d["rows"]:
        if r["schedule"].startswith("uniform ("):
            ax.axhline(r["fd"], color="k", lw=0.6, ls=":")
            ax.text(20.5, r["fd"], f"DDIM {r['nfe']}", fontsize=7, va="center")
    ax.axhline(d["real"]["fd_floor"], color="k", lw=1)
    ax.text(5, d["real"]["fd_floor"], "real vs real", fontsize=7, va="bottom")
    ax.set(xlabel="NFE", ylabel="classifier-feature FD to real digits", yscale="log", title="Shipped digits model")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(DOCS / "digits_fd_vs_nfe.png", dpi=120)


def schedule_plot():
    path = pretrained_path("digits")
    grid = load_model_info(path).default_grid
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, nfe in zip(axes, (8, 15)):
        for kind in ("uniform", "quadratic", "logsnr"):
            s = R.baseline_schedule(grid, nfe, kind)
            ax.plot(np.asarray(s.timesteps[:-1]), "o-", color=STYLE[kind], label=kind)
        s = R.Schedule.load(path / "schedules" / f"rbe_nfe{nfe}.json", grid)
        ax.plot(np.asarray(s.timesteps[:-1]), "s-", color=STYLE["rbe"], lw=2, label=f"RBE (tau={s.tau:.3g})")
        ax.set(xlabel="step", ylabel="training timestep evaluated", title=f"NFE {nfe}, shipped digits model")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(DOCS / "schedules.png", dpi=120)


def grids_plot():
    g = np.load(RES / "digits_nfe8.npz")
    keys = [f"{k}+{s}" for s in LINE for k in STYLE]
    fig, axes = plt.subplots(2, 4, figsize=(12, 6.4))
    for ax, k in zip(axes.ravel(), keys):
        x = np.clip((g[k][..., 0] + 1) / 2, 0, 1)
        canvas = np.ones((6 * 17, 6 * 17))
        for i, im in enumerate(x[:36]):
            r, c = divmod(i, 6)
            canvas[r * 17 : r * 17 + 16, c * 17 : c * 17 + 16] = im
        ax.imshow(canvas, cmap="gray")
        ax.set_title(f"{k}, NFE 8", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(DOCS / "digits_nfe8_grids.png", dpi=110)


def main():
    DOCS.mkdir(exist_ok=True)
    for fn, need in ((gmm_plot, RES / "gmm.json"), (digits_plot, RES / "digits.json"), (schedule_plot, None), (grids_plot, RES / "digits_nfe8.npz")):
        if need is not None and not need.exists():
            print(f"skipped {fn.__name__}: {need} is missing (run its benchmark first)")
            continue
        fn()
        print(f"drew {fn.__name__}")


if __name__ == "__main__":
    main()
