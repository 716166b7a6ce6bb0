"""Exceptions user code may raise to choose its HTTP answer."""

from __future__ import annotations

__all__ = ["BadInput"]


class BadInput(ValueError):
    """The request's payload is unusable: answered as 400 `bad_input` with this message, never retried."""
