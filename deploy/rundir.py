"""The run directory `raygate up` writes (pid, gateway URL, admin token file) and the CLI reads."""

from __future__ import annotations

from pathlib import Path

import orjson

__all__ = ["default_run_dir", "read_run_info"]


def default_run_dir(configured: str | None = None) -> Path:
    """`configured` (the CLI passes $RAYGATE_RUN_DIR) or ~/.raygate."""
    return Path(configured or Path.home() / ".raygate")


def read_run_info(run_dir: Path) -> dict | None:
    """What `up` wrote to RUN_DIR/up.json, or None when nothing runs from there."""
    try:
        return orjson.loads((Path(run_dir) / "up.json").read_bytes())
    except (OSError, ValueError):
        return None
