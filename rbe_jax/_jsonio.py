"""Reading the library's JSON files with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path


def read_json(path: Path, error: type[Exception]):
    """Parses ``path``; a truncated or corrupted file raises ``error`` naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid JSON (truncated or corrupted?): {e}") from None
