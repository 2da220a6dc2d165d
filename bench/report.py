"""Writes ``docs/results.md`` and the README's results block from the committed results in
``bench/results/`` (nothing is rerun):

    python bench/report.py            # rewrite both
    python bench/report.py --check    # exit 1 if either is out of date (the test suite runs it)

Every results file records the command that made it (``meta.command`` or ``command`` in its
``.json``, and a line of its ``.md``); a file without one, or one that belongs to no section
below, stops the report.  The README block (between ``<!-- results: begin -->`` and
``<!-- results: end -->``) holds the headline ratios; ``docs/results.md`` holds them too, then
every results file under the section of what it measures.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "results.md"
README = ROOT / "README.md"
BEGIN, END = "<!-- results: begin (python bench/report.py) -->", "<!-- results: end -->"
NFES = (5, 8, 10, 15, 20)
FIXED = ("uniform", "quadratic", "logsnr", "karras")
# (section, what it measures, file-name patterns of its results)
SECTIONS = (
    ("Schedules and solvers at equal NFE", "every solver on every schedule of one model, on test noise no calibration saw", ("schedules_*",)),
    ("Held-out validation of the shipped schedules", "the schedules shipped in the package, on fresh noise", ("validation_*",)),
    ("Learned schedules and coefficients", "learn_schedule on held-out noise, and what was shipped of it", ("learned_*", "ship_learned_*")),
    ("Against other samplers", "diffusers' PyTorch and Flax schedulers and diffrax's adaptive solvers, same network and noise", ("peers_*", "samplers")),
    ("Every diffusion family", "one exact mixture written as DDPM, score_sde VP and VE, EDM and flow models", ("families",)),
    ("Quality of the shipped models and the first benchmarks", "FD and classifier scores of the digits models; the first mixture benchmark", ("digits", "gmm", "conditional")),
    ("Costs", "compilation, eager calls, calibration", ("field_costs",)),
)


def command_of(stem: str) -> str:
    """The command recorded with a results file (its .json, else a backticked ``python ...``
    line of its .md)."""
    pj, pm = RESULTS / f"{stem}.json", RESULTS / f"{stem}.md"
    if pj.is_file():
        d = json.loads(pj.read_text())
        cmd = (d.get("meta") or {}).get("command") or d.get("command")
        if cmd:
            return cmd
    m = re.search(r"`((?:python|bash) [^`]+)`", pm.read_text()) if pm.is_file() else None
    if m is None:
        raise SystemExit(f"{stem}: no command recorded in bench/results/{stem}.json or .md")
    return m.group(1)


def section_of(stem: str) -> int:
    hits = [i for i, (_, _, pats) in enumerate(SECTIONS) if any(fnmatch.fnmatch(stem, p) for p in pats)]
    if len(hits) != 1:
        raise SystemExit(f"{stem}: belongs to {len(hits)} sections of bench/report.py (needs exactly one)")
    return hits[0]


def load(stem: str) -> dict | None:
    p = RESULTS / f"{stem}.json"
    return json.loads(p.read_text()) if p.is_file() else None


# ------------------------------------------------------------------------------ headline tables
LABELS = {  # results' model names, as the tables show them
    "gmm": "32-d mixture",
    "digits_cond_w2": "digits_cond, w = 2",
    "ddpm": "mixture as DDPM (eps)",
    "vp": "mixture as score_sde VP (score)",
    "ve": "mixture as score_sde VE (score)",
    "edm": "mixture as EDM (x0)",
    "flow": "mixture as flow (velocity)",
}


def peers_ratios() -> list[str]:
    """Our best configuration against the best diffusers sampler, RMSE and median, per NFE."""
    L = ["| model | score | " + " | ".join(f"NFE {n}" for n in NFES) + " |", "|---|---|" + "---|" * len(NFES)]
    for name in ("gmm", "digits", "digits_cond_w2"):
        peers, ours = load(f"peers_{name}"), load(f"schedules_{name}")
        if peers is None or ours is None or peers["meta"]["test"] != ours["meta"]["test"]:
            continue
        for key in ("rmse", "median"):
            cells = []
            for n in NFES:
                p = [r[key] for r in peers["rows"] if r["nfe"] == n]
                o = [r for r in ours["rows"] if r["nfe"] == n]
                best = min(o, key=lambda r: r[key]) if o else None
                cells.append(f"{best[key] / min(p):.2f}x ({best['solver']}, {best['schedule']})" if p and best else "")
            L.append(f"| {LABELS.get(name, name)} | {key} | " + " | ".join(cells) + " |")
    return L


def learned_ratios() -> list[str]:
    """Learned times (and learned 2M coefficients) against the best fixed spacing, RMSE."""
    L = ["| model | solver | learned times, NFE 5 / 10 | + learned 2M coefficients, NFE 5 / 10 |", "|---|---|---|---|"]
    for stem in ("learned_gmm", "learned_families", "learned_digits", "learned_digits_flow"):
        d = load(stem)
        if d is None:
            continue
        keys = list(dict.fromkeys((r["model"], r["solver"]) for r in d["rows"]))
        for model, solver in keys:
            rows = {r["nfe"]: r for r in d["rows"] if (r["model"], r["solver"]) == (model, solver)}

            def cell(field: str) -> str:
                out = []
                for n in (5, 10):
                    r = rows.get(n)
                    v = None if r is None else r.get(field)
                    if not v:
                        out.append("-")
                        continue
                    base = r["fixed"][r["best_fixed"]]["rmse"]
                    kept = "" if v.get("selected", "learned") == "learned" else f" (kept {v['selected']})"
                    out.append(f"{v['rmse'] / base:.2f}x{kept}")
                return " / ".join(out)

            label = "24-d mixture (DDPM)" if stem == "learned_gmm" else LABELS.get(model, model)
            L.append(f"| {label} | {solver} | {cell('learned')} | {cell('learned_coefficients')} |")
    return L


def families_ratios() -> list[str]:
    """The recommended configuration against the best standard sampler of each family."""
    d = load("families")
    if d is None:
        return []
    nfes = sorted({r["nfe"] for rows in d["results"].values() for r in rows if r["group"] == "recommended"})
    L = ["| family | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---|" + "---|" * len(nfes)]
    for fam, rows in d["results"].items():
        cells = []
        for n in nfes:
            rec = [r["rmse"] for r in rows if r["nfe"] == n and r["group"] == "recommended"]
            std = [r["rmse"] for r in rows if r["nfe"] == n and r["group"] == "standard"]
            cells.append(f"{rec[0] / min(std):.2f}x" if rec and std else "")
        L.append(f"| {LABELS.get(fam, fam)} | " + " | ".join(cells) + " |")
    return L


def headline() -> list[str]:
    return [
        "RMSE to an accurate solve of the same test noise (no calibration saw it), as a ratio; "
        "below 1 is better. Every number comes from a file of `bench/results/` listed in "
        "[docs/results.md](docs/results.md) with the command that made it.",
        "",
        "**Our best configuration at each NFE against the best diffusers sampler we ran** (nine "
        "PyTorch schedulers of diffusers 0.42 and its two Flax ones of 0.39; same network, noise and "
        "reference; `peers_*`, `schedules_*`):",
        "",
        *peers_ratios(),
        "",
        "**Learned schedules against the best fixed spacing of the same solver** (held-out noise; "
        "`(kept X)`: the guard returned that fixed or optimized schedule; `learned_*`):",
        "",
        *learned_ratios(),
        "",
        "**UniPC on an optimized schedule against the best standard sampler of each family** "
        "(`families`):",
        "",
        *families_ratios(),
    ]


# ------------------------------------------------------------------------------ the documents
def demote(md: str, levels: int = 2) -> str:
    return re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + levels) + " ", md, flags=re.M)


def results_doc() -> str:
    stems = sorted({p.stem for p in RESULTS.glob("*.md")} | {p.stem for p in RESULTS.glob("*.json")})
    by_section: dict[int, list[str]] = {}
    for s in stems:
        by_section.setdefault(section_of(s), []).append(s)
    L = [
        "# Results",
        "",
        "Generated by `python bench/report.py` from the committed files in `bench/results/`; do not "
        "edit by hand (the test suite checks that it is up to date). Each file names the command "
        "that made it; rerun that command to reproduce it (the machines and dates are in each "
        "file). The scripts moved into `bench/<what they measure>/` on 2026-12-05 and the recorded "
        "commands give their current paths; their options are unchanged.",
        "",
        "## Headline",
        "",
        *headline(),
        "",
        "## Contents",
        "",
    ]
    for i, (title, what, _) in enumerate(SECTIONS):
        anchor = re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")
        L.append(f"- [{title}](#{anchor}): {what} ({', '.join(f'`{s}`' for s in by_section.get(i, []))})")
    for i, (title, what, _) in enumerate(SECTIONS):
        L += ["", f"## {title}", "", f"{what[0].upper()}{what[1:]}."]
        for s in by_section.get(i, []):
            L += ["", f"### `{s}`", "", f"Command: `{command_of(s)}`"]
            md = RESULTS / f"{s}.md"
            if md.is_file():
                L += ["", demote(md.read_text().strip(), 3)]
            else:
                L += ["", f"(data only: `bench/results/{s}.json`)"]
    return "\n".join(L) + "\n"


def readme_text() -> str:
    text = README.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md lacks the markers {BEGIN!r} ... {END!r}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + BEGIN + "\n" + "\n".join(headline()) + "\n" + END + tail


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only check that docs/results.md and the README block are up to date")
    a = ap.parse_args(argv)
    want = {DOC: results_doc(), README: readme_text()}
    stale = [p for p, t in want.items() if not p.is_file() or p.read_text() != t]
    if a.check:
        for p in stale:
            print(f"{p.relative_to(ROOT)} is out of date: run python bench/report.py", file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        p.write_text(want[p])
        print(f"wrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
