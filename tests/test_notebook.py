"""The quickstart notebook: its install cell's logic from a directory outside the repository,
and the whole notebook top to bottom on the CPU (small settings) with 1 and 4 devices."""

import importlib.util
import subprocess
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).parent.parent
NOTEBOOK = REPO / "colabs" / "rbe_jax_quickstart.ipynb"


def _install_cell() -> str:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "code" and "RBE_JAX_SOURCE" in c.source]
    assert len(cells) == 1
    return cells[0]


@pytest.fixture
def run_install_cell(monkeypatch, tmp_path):
    """Executes the install cell with pip replaced by a recorder and, if asked, rbe_jax and
    matplotlib made to look missing; returns the pip command lines."""
    calls = []
    monkeypatch.setattr(subprocess, "check_call", lambda cmd, **k: calls.append(cmd))
    real = importlib.util.find_spec

    def run(cwd, missing=(), source=""):
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a))
        monkeypatch.chdir(cwd)
        code = _install_cell().replace('RBE_JAX_SOURCE = ""', f"RBE_JAX_SOURCE = {source!r}", 1)
        calls.clear()
        exec(compile(code, "install_cell", "exec"), {})
        return list(calls)

    return run


def test_install_cell_from_outside_the_repository(run_install_cell, tmp_path):
    outside = tmp_path / "work"
    outside.mkdir()
    assert run_install_cell(outside) == []  # importable already: nothing installed
    calls = run_install_cell(outside, missing=("rbe_jax",), source="git+https://example.invalid/rbe_jax.git")
    assert len(calls) == 1 and calls[0][-1] == "git+https://example.invalid/rbe_jax.git"
    constraints = calls[0][calls[0].index("-c") + 1]
    assert not Path(constraints).exists()  # a temporary file, removed again
    calls = run_install_cell(REPO / "colabs", missing=("rbe_jax", "matplotlib"))  # a checkout above the cwd
    assert [c[-1] for c in calls] == [str(REPO), "matplotlib"]
    with pytest.raises(RuntimeError, match="set RBE_JAX_SOURCE at the top of this cell"):
        run_install_cell(outside, missing=("rbe_jax",))
    assert list(outside.iterdir()) == []


def test_install_cell_pins_the_runtime_jax(monkeypatch, tmp_path):
    import importlib.metadata

    seen = {}

    def record(cmd, **k):
        seen["pins"] = Path(cmd[cmd.index("-c") + 1]).read_text().split()

    monkeypatch.setattr(subprocess, "check_call", record)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "rbe_jax" else real(name, *a))
    monkeypatch.chdir(tmp_path)
    exec(compile(_install_cell().replace('RBE_JAX_SOURCE = ""', 'RBE_JAX_SOURCE = "/some/checkout"', 1), "install_cell", "exec"), {})
    assert f"jax=={importlib.metadata.version('jax')}" in seen["pins"]
    assert f"jaxlib=={importlib.metadata.version('jaxlib')}" in seen["pins"]


@pytest.mark.slow
@pytest.mark.parametrize("devices", [1, 4])
def test_quickstart_notebook_runs(tmp_path, monkeypatch, devices):
    monkeypatch.setenv("RBE_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("XLA_FLAGS", f"--xla_force_host_platform_device_count={devices}")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert f"{devices} device(s)" in text
    assert "RMSE to a 1000-step solve" in text and "output sharding" in text and "saved to" in text
    if devices > 1:
        assert "PartitionSpec('batch',)" in text or "P('batch',)" in text
    assert list(tmp_path.iterdir()) == []  # the notebook writes nothing into its working directory
