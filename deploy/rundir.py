"""The run directory `raygate up` writes (pid, gateway URL, admin token file) and the CLI reads."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

__all__ = ["default_run_dir", "read_run_info"]


def default_run_dir() -> Path:
    return Path(os.environ.get("RAYGATE_RUN_DIR") or Path.home() / ".raygate")


def read_run_info(run_dir: Path) -> dict | None:
    """What `up` wrote to RUN_DIR/up.json, or None when nothing runs from there."""
    try:
        return orjson.loads((Path(run_dir) / "up.json").read_bytes())
    except (OSError, ValueError):
        return None
