"""Request checks and error answers shared by the object, container and account servers."""

from __future__ import annotations

from node.http_server import Request, text_response
from node.storage.timestamp import Timestamp


class HTTPError(Exception):
    """Abort a request with this response (raised from worker threads too)."""

    def __init__(self, status: int, text: str = "", headers: list[tuple[str, str]] | None = None):
        super().__init__(text)
        self.response = text_response(status, text + ("\n" if text else ""), headers)


def require_timestamp(request: Request, header: str = "x-timestamp") -> Timestamp:
    """The request's timestamp header, or 400 as Swift words it."""
    return parse_timestamp(request.headers.get(header), header)


def parse_timestamp(value: str | None, header: str = "x-timestamp") -> Timestamp:
    """A timestamp header's value (``None``: missing), or 400 as Swift words it."""
    if value is None:
        raise HTTPError(400, f"Missing {header} header")
    try:
        return Timestamp(value)
    except ValueError:
        raise HTTPError(400, f"{header} should be a UNIX timestamp float value; was {value!r}") from None


def is_true(value: str | None) -> bool:
    """Swift's ``config_true_value`` for header and query flags."""
    return (value or "").strip().lower() in ("1", "true", "yes", "on", "t", "y")


def backend_timestamp(ts: Timestamp | None) -> list[tuple[str, str]]:
    return [("X-Backend-Timestamp", ts.internal)] if ts is not None else []
