"""Structured JSON logs (structlog), configured once per process."""

from __future__ import annotations

import logging
import sys

import orjson
import structlog

__all__ = ["configure_logging"]

_configured = False


def configure_logging(level: int = logging.INFO, stream=None) -> None:
    """JSON lines on `stream` (stdout by default), with contextvars (request_id, route, ...) merged in."""
    global _configured
    if _configured:
        return
    _configured = True
    out = stream or sys.stdout
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.BytesLoggerFactory(file=getattr(out, "buffer", out)),
        cache_logger_on_first_use=True,
    )
