"""The README's Python snippets run as written, with the shipped model, on 4 host devices
(in a subprocess: the device count is fixed when JAX starts), from a directory outside the
repository."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"


def _snippets() -> str:
    text = README.read_text()
    start, end = text.index("## Using it from Python"), text.index("## Guidance, clipping")
    blocks = re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)
    runnable = [b for b in blocks if "jax.distributed.initialize" not in b]  # multi-host needs hosts
    assert len(runnable) == 2, len(runnable)
    return "\n".join(runnable)


@pytest.mark.slow
def test_readme_python_snippets_on_four_devices(tmp_path):
    code = (
        "import os\n"
        "os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=4'\n"
        + _snippets()
        + "\nassert len(jax.devices()) == 4\n"
        "assert x.sharding.is_equivalent_to(NamedSharding(mesh, P('batch')), x.ndim)\n"
        "assert schedule.nfe == 8 and R.Schedule.load('rbe_nfe8.json').nfe == 8\n"
        "print('README OK')\n"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0 and "README OK" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rbe_nfe8.json"]  # what the snippet saves, nothing else
