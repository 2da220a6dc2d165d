"""The package's shape and its evidence: the layers import only downward, no function is
longer than 80 lines, every public exception is exported, every committed result names its
command, and docs/results.md and the README's results block are what bench/report.py makes."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import rbe_jax as R

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "rbe_jax"
RESULTS = ROOT / "bench" / "results"
# each layer may import from itself and the layers before it
LAYERS = ("core", "rbe", "tuning", "zoo", "app")
ALLOWED = {"core": {"core"}, "rbe": {"core", "rbe"}, "tuning": {"core", "tuning"}, "zoo": {"core", "zoo"}, "app": set(LAYERS)}


def _modules():
    return sorted(p for p in PKG.rglob("*.py"))


def _imported_layers(path: Path) -> set[str]:
    """The layers of rbe_jax a module imports from (relative or absolute imports)."""
    rel = path.relative_to(PKG).parts
    here = list(rel[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("rbe_jax"):
                target = node.module.split(".")[1:]
            else:
                continue
            if target and target[0] in LAYERS:
                out.add(target[0])
    return out


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_import_only_downward(layer):
    for path in sorted((PKG / layer).rglob("*.py")):
        bad = _imported_layers(path) - ALLOWED[layer]
        assert not bad, f"{path.relative_to(ROOT)} imports from {sorted(bad)}"


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


def test_every_public_exception_is_exported():
    raised = set()
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                if bases & {"Exception", "ValueError", "TypeError", "RuntimeError"} and node.name != "CLIError":
                    raised.add(node.name)
    assert raised == {"ScheduleError", "CheckpointError", "JobError", "PredictionMismatch"}
    for name in raised:
        assert name in R.__all__ and issubclass(getattr(R, name), Exception)


def test_every_result_names_its_command():
    stems = {p.stem for p in RESULTS.glob("*.json")} | {p.stem for p in RESULTS.glob("*.md")}
    assert len(stems) > 20
    for stem in sorted(stems):
        pj, pm = RESULTS / f"{stem}.json", RESULTS / f"{stem}.md"
        if pj.is_file():
            d = json.loads(pj.read_text())
            cmd = (d.get("meta") or {}).get("command") or d.get("command")
            assert cmd and cmd.startswith("python "), f"{pj.name}: no command"
            script = ROOT / cmd.split()[1]
            assert script.is_file(), f"{pj.name}: {cmd} names a script that is not there"
        if pm.is_file():
            assert "`python " in pm.read_text(), f"{pm.name}: no command"


def test_peer_results_name_their_model():
    """bench/peers/diffusers.py once wrote a sampler's name over the model's."""
    for pj in RESULTS.glob("peers_*.json"):
        meta = json.loads(pj.read_text())["meta"]
        assert meta["model"] == pj.stem.removeprefix("peers_"), pj.name
        assert "rbe_jax, best by RMSE" in pj.with_suffix(".md").read_text(), f"{pj.with_suffix('.md').name} lacks the summary row"


def test_results_doc_and_readme_are_generated_and_short():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "report.py"), "--check"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300
