"""The integration examples of docs/families.md run as written, each in a fresh namespace,
and give finite samples of the right shape."""

import re
from pathlib import Path

import numpy as np
import pytest

DOC = Path(__file__).parent.parent / "docs" / "families.md"


def _snippets():
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_there_are_four_examples():
    assert len(_snippets()) == 4


@pytest.mark.parametrize("i", range(4))
def test_example_runs(i):
    ns = {}
    exec(compile(_snippets()[i], f"docs/families.md example {i + 1}", "exec"), ns)
    outs = [ns[k] for k in ("x", "euler", "fast") if k in ns]
    assert outs
    for x in outs:
        assert x.shape == (16, 2) and np.all(np.isfinite(np.asarray(x)))
