"""Structured logging: one JSON object per line, one line per event.

Every line carries ``event`` and, where there is one, ``rid`` (the request
id), so ``grep <rid>`` follows a request through proxy and storage logs.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


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


def setup_logging(level: str = "info", stream: Any = None, path: str | None = None) -> None:
    """Route all ``peerstack.*`` loggers to one JSON-lines handler."""
    handler: logging.Handler
    if path:
        handler = logging.FileHandler(path)
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger("peerstack")
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    root.propagate = False
    logging.Formatter.converter = time.gmtime
