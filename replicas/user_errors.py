"""What user code may raise or return to choose its HTTP answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["BadInput", "Reply"]


class BadInput(ValueError):
    """The request's payload is unusable: answered as 400 `bad_input` with this message, never retried."""


@dataclass(frozen=True)
class Reply:
    """Return `Reply(body, status=202)` to answer with a success status other than 200 (2xx only)."""

    body: Any  # JSON-serialisable answer
    status: int = 200  # 200-299

    def __post_init__(self) -> None:
        if not isinstance(self.status, int) or not 200 <= self.status <= 299:
            raise ValueError(f"Reply.status must be an int in 200-299, got {self.status!r}")
