"""Case-insensitive HTTP header access shared by the server and the client.

h11 hands us headers as a list of ``(bytes, bytes)`` pairs with lower-cased
names.  Handlers want ``headers.get("X-Timestamp")`` and a way to see every
header with a prefix (``X-Object-Meta-*``); this class gives both without
copying more than once per message.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class Headers:
    """Read-only, case-insensitive view of a message's headers.

    Repeated headers are joined with ``", "`` as RFC 9110 allows, except that
    :meth:`get_all` still returns each value separately.
    """

    __slots__ = ("_raw", "_map")

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        pairs = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw]
        self._raw = pairs
        merged = dict(pairs)
        if len(merged) != len(pairs):
            # A repeated header: dict() kept only the last value.
            merged = {}
            for name, value in pairs:
                merged[name] = f"{merged[name]}, {value}" if name in merged else value
        self._map = merged

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._map.get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return self._map[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._map

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self._raw if k == name]

    def items(self) -> Iterator[tuple[str, str]]:
        """Each distinct header once, lower-cased name first."""
        return iter(self._map.items())

    def with_prefix(self, prefix: str) -> dict[str, str]:
        """Headers whose name starts with ``prefix`` (case-insensitive)."""
        prefix = prefix.lower()
        return {k: v for k, v in self._map.items() if k.startswith(prefix)}

    def __len__(self) -> int:
        return len(self._map)

    def __repr__(self) -> str:
        return f"Headers({self._map!r})"


def encode_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Turn ``(name, value)`` strings into the bytes h11 sends.

    Values that are not latin-1 (UTF-8 metadata, for example) are sent as
    UTF-8 bytes, which is what Swift clients expect on the wire; bytes
    values go out as they are, anything else as its ``str()``.
    """
    out = []
    for name, value in headers:
        if type(value) is bytes:
            raw = value
        else:
            if type(value) is not str:
                value = str(value)
            try:
                raw = value.encode("latin-1")
            except UnicodeEncodeError:
                raw = value.encode("utf-8")
        out.append((name.encode("latin-1"), raw))
    return out
