"""Access lines: one structured JSON line per request, buffered, in a file per gateway process."""

from __future__ import annotations

import logging
import sys
import time

import orjson
import structlog

__all__ = ["open_access_log"]


def _add_timestamp(logger, method_name, event_dict):
    event_dict["ts"] = time.time()  # epoch seconds: cheap on the hot path, exact, sortable
    return event_dict


class _BufferedBytesLogger:
    """Like structlog.BytesLogger, minus its flush after every line: the owner flushes a few times a second."""

    def __init__(self, stream) -> None:
        self._write = stream.write

    def msg(self, message: bytes) -> None:
        self._write(message + b"\n")

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def open_access_log(path: str | None):
    """A structlog logger for access lines and the file it writes (None: stdout, unbuffered by us).

    Access lines go to a file of their own, buffered and flushed by the caller a few times a second, so a
    busy gateway neither makes a syscall per request nor has Ray's log monitor ship every line.
    """
    if path:
        stream = open(path, "ab", buffering=1 << 16)
    else:
        stream = getattr(sys.stdout, "buffer", sys.stdout)
    logger = structlog.wrap_logger(
        _BufferedBytesLogger(stream),
        processors=[_add_timestamp, structlog.processors.JSONRenderer(serializer=orjson.dumps)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=True,
    )
    return logger, stream
