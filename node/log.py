"""Structured logging: one JSON object per line, one line per event.

Every line carries ``event`` and, where there is one, ``rid`` (the request
id), so ``grep <rid>`` follows a request through proxy and storage logs.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from contextvars import ContextVar
from typing import Any

#: the id of the request this task serves; trio copies it into tasks the
#: handler starts, and the HTTP client sends it on as ``X-Trans-Id``
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Emit ``event`` with ``fields`` as one JSON line, if the level is enabled."""
    if logger.isEnabledFor(level):
        logger.log(level, "", extra={"event": event, "fields": fields})


class JSONFormatter(logging.Formatter):
    """Formats records from :func:`log_event` (and plain ones) as JSON lines."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None) or "log",
        }
        fields = getattr(record, "fields", None)
        if fields:
            doc.update(fields)
        msg = record.getMessage()
        if msg:
            doc["msg"] = msg
        if getattr(record, "rid", None):
            doc["rid"] = record.rid  # type: ignore[attr-defined]
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, separators=(",", ":"))


class _LazyFlush:
    """Flush at most every ``FLUSH_INTERVAL`` seconds, and at once for warnings.

    A flush per line costs about as much as serving a small request.  Lines
    reach the file within the interval instead: the first unflushed line
    arms a timer that flushes, so a node that goes quiet still shows its last
    lines; :func:`logging.shutdown` flushes the rest on exit.
    """

    FLUSH_INTERVAL = 0.5
    _timer: threading.Timer | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + "\n")  # type: ignore[attr-defined]
            if record.levelno >= logging.WARNING:
                self.flush()  # type: ignore[attr-defined]
            elif self._timer is None:
                self._timer = threading.Timer(self.FLUSH_INTERVAL, self._timed_flush)
                self._timer.daemon = True
                self._timer.start()
        except Exception:
            self.handleError(record)  # type: ignore[attr-defined]

    def _timed_flush(self) -> None:
        self._timer = None
        self.flush()  # type: ignore[attr-defined]


class _FileHandler(_LazyFlush, logging.FileHandler):
    pass


class _StreamHandler(_LazyFlush, logging.StreamHandler):
    pass


def setup_logging(level: str = "info", stream: Any = None, path: str | None = None) -> None:
    """Route all ``peerstack.*`` loggers to one JSON-lines handler."""
    handler: logging.Handler
    if path:
        handler = _FileHandler(path)
    else:
        handler = _StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger("peerstack")
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    root.propagate = False
    logging.Formatter.converter = time.gmtime
