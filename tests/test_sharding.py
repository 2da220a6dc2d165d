"""Sharded batches over a device mesh give the single-device results (4 host CPU devices,
in a subprocess: the device count is fixed when JAX starts)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_sharded_equals_unsharded():
    script = Path(__file__).parent / "helpers" / "sharded_check.py"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "SHARDED OK" in out.stdout and "SHIPPED MODEL SHARDED OK" in out.stdout


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_jax_distributed_on_localhost():
    """Two processes, one CPU device each, gloo collectives: the multi-host path."""
    script = Path(__file__).parent / "helpers" / "distributed_worker.py"
    port = str(_free_port())
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, str(script), str(i), port], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for i in range(2)]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for i, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0 and f"PROCESS {i} OK" in out, out[-3000:]
