"""Where the zoo finds things outside the package: the shared benchmark samples and golden vectors."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path | None:
    """`$ZOO_SHARED`, else `../shared` beside the checkout; None when neither exists."""
    candidates = [os.environ.get("ZOO_SHARED"), REPO_ROOT.parent / "shared"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None
