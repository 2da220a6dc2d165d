"""Sharded batches over a device mesh give the single-device results (4 host CPU devices,
in a subprocess: the device count is fixed when JAX starts)."""

import os
import subprocess
import sys
from pathlib import Path


def test_sharded_equals_unsharded():
    script = Path(__file__).parent / "helpers" / "sharded_check.py"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "SHARDED OK" in out.stdout
