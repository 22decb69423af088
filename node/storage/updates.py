"""Telling the layer above about a change: object -> container -> account.

After an object PUT or DELETE the object server tells the container
servers named in the request (``X-Container-Host`` / ``-Device`` /
``-Partition``) so the listing shows it; container servers tell account
servers (``X-Account-*``) about their totals the same way.  An update that
fails is never lost: it is written as an *async pending* record for the
updater (``replicator/``) to retry.

Async pending records are JSON files, written atomically (tmp, fsync,
rename, fsync dir) on the device that holds the thing that changed::

    <device>/async_pending/<hash[-3:]>/<hash>-<timestamp>

    {"kind": "container",          # an object row for a container server
                                   # ("account": a container row for an account server)
     "op": "PUT",                  # or "DELETE"
     "account": "a", "container": "c", "obj": "o",   # obj is null for kind "account"
     "headers": {"X-Backend-Server": "container", "X-Timestamp": "...",
                 "X-Size": "...", ...},   # exactly what to send
     "targets": [{"host": "127.0.0.1", "port": 6201, "device": "d1", "partition": 7}],
     "created": "1700000000.12345"}

``targets`` are the peers that did not answer 2xx; an updater may also ask
the ring for the current ones.  A newer update for the same thing replaces
nothing: each has its own timestamp in the file name, and the receiving
server keeps the newest row whatever order they arrive in.

Object rows for one container replica are sent one request at a time:
rows that arrive while a request to that replica is in flight wait and
then go out together as one ``UPDATE`` (a JSON list of the single rows'
headers; see :meth:`node.storage.container_server.ContainerServer.update_rows`).
Thirty-two clients writing into one container would otherwise cost every
container replica thirty-two requests where a handful carry the same rows;
an idle replica still gets each row at once, on its own.

A small PUT or a DELETE also says, before its object goes to disk, that its
row will follow (:meth:`UpdateSender.promise`).  A batch about to leave for
the same container replica waits for the rows promised meanwhile -- a
thread hop away, a few milliseconds -- and takes them along, for at most
:data:`GATHER_TIMEOUT`.  It never waits on a guess: with no write for that
replica in progress, a row leaves at once.  At 32 concurrent 4 KiB PUTs
this cut the row requests (and the container servers' commits) per PUT by
a third.
"""

from __future__ import annotations

import functools
import json
import logging
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path

import trio

from node.headers import Headers
from node.http_client import BackendError, HTTPClient, Timeouts
from node.log import log_event
from node.storage.fsutil import atomic_write_json
from node.storage.group_commit import GroupCommit
from node.storage.timestamp import Timestamp

log = logging.getLogger("peerstack.storage")

#: updates sit on the client's critical path: fail fast, leave it to the updater
UPDATE_TIMEOUTS = Timeouts(connect=0.5, node=3.0)
#: the longest a batch of rows waits for rows promised by writes in progress
GATHER_TIMEOUT = 0.05


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    device: str
    partition: int


def parse_targets(headers: Headers, kind: str) -> list[Target]:
    """Targets from ``X-<kind>-Host`` (``ip:port`` list), ``-Device`` (list), ``-Partition``.

    Returns ``[]`` when the headers are absent; raises ValueError when they
    are present but do not line up.
    """
    hosts = headers.get(f"x-{kind}-host")
    if not hosts:
        return []
    devices = [d.strip() for d in (headers.get(f"x-{kind}-device") or "").split(",")]
    host_list = [h.strip() for h in hosts.split(",")]
    partition = int(headers.get(f"x-{kind}-partition") or "")
    if len(devices) != len(host_list) or partition < 0:
        raise ValueError(f"X-{kind}-Host and X-{kind}-Device do not match")
    targets = []
    for hostport, device in zip(host_list, devices):
        host, _, port = hostport.rpartition(":")
        targets.append(Target(host.strip("[]"), int(port), device, partition))
    return targets


def write_async_pending(device_path: Path, name_hash: str, timestamp: Timestamp,
                        record: dict) -> Path:
    """Durably store an update that could not be delivered (blocking)."""
    path = device_path / "async_pending" / name_hash[-3:] / f"{name_hash}-{timestamp.internal}"
    atomic_write_json(path, record, device_path / "tmp", device_path)
    return path


@dataclass(frozen=True)
class _Row:
    """One object row on its way to a container replica."""

    method: str
    obj: str
    headers: dict[str, str]
    rid: str


_RowQueue = tuple[Target, str, str]  # (container replica, account, container)


class _Promised:
    """Rows promised to one row queue by writes in progress.

    A batch waits for the rows promised before it started waiting, not for
    later ones: under steady load there is always a write in progress, and
    waiting for all of them would hold every batch for the whole timeout.
    """

    __slots__ = ("issued", "kept", "waiters")

    def __init__(self) -> None:
        self.issued = 0
        self.kept = 0
        #: (rows issued when the waiter came, its wake-up)
        self.waiters: list[tuple[int, trio.Event]] = []


class RowPromise:
    """A write's word that its rows for these queues follow shortly.

    Kept queue by queue as the rows are queued (:meth:`UpdateSender.send`);
    :meth:`release` withdraws what is left (the write failed, or sends no
    row), so nobody waits for it.  A context manager that releases on exit.
    """

    def __init__(self, sender: UpdateSender, queues: list[_RowQueue]) -> None:
        self._sender = sender
        self._pending = set(queues)

    def keep(self, queue: _RowQueue) -> None:
        if queue in self._pending:
            self._pending.discard(queue)
            self._sender._fulfilled(queue)

    def release(self) -> None:
        while self._pending:
            self._sender._fulfilled(self._pending.pop())

    def __enter__(self) -> RowPromise:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class UpdateSender:
    """Sends row updates to peers over the signed internal client."""

    def __init__(self, client: HTTPClient, timeouts: Timeouts = UPDATE_TIMEOUTS,
                 gather_timeout: float = GATHER_TIMEOUT) -> None:
        self.client = client
        self.timeouts = timeouts
        self.gather_timeout = gather_timeout
        #: object rows queued per (container replica, account, container)
        self._rows: GroupCommit[_Row] = GroupCommit(blocking=False, gather=self._gather)
        self._promised: dict[_RowQueue, _Promised] = {}

    def promise(self, targets: list[Target], account: str, container: str) -> RowPromise:
        """Announce the rows a write about to be stored will send to ``targets``."""
        queues = [(t, account, container) for t in targets]
        for queue in queues:
            promised = self._promised.get(queue)
            if promised is None:
                promised = self._promised[queue] = _Promised()
            promised.issued += 1
        return RowPromise(self, queues)

    def _fulfilled(self, queue: _RowQueue) -> None:
        promised = self._promised[queue]
        promised.kept += 1
        waiting = []
        for issued, wake in promised.waiters:
            if promised.kept >= issued:
                wake.set()
            else:
                waiting.append((issued, wake))
        promised.waiters = waiting
        self._forget_if_done(queue, promised)

    def _forget_if_done(self, queue: _RowQueue, promised: _Promised) -> None:
        if promised.kept == promised.issued and not promised.waiters:
            del self._promised[queue]

    async def _gather(self, queue: _RowQueue) -> None:
        """A batch's last moment open: wait for the rows promised to its queue so far."""
        promised = self._promised.get(queue)
        if promised is None or promised.kept >= promised.issued:
            return
        waiter = (promised.issued, trio.Event())
        promised.waiters.append(waiter)
        try:
            with trio.move_on_after(self.gather_timeout):
                await waiter[1].wait()
        finally:
            if waiter in promised.waiters:
                promised.waiters.remove(waiter)
                self._forget_if_done(queue, promised)

    async def send(self, method: str, targets: list[Target], names: list[str],
                   headers: dict[str, str], rid: str,
                   promise: RowPromise | None = None) -> dict[Target, int | None]:
        """Send to every target at once; each target's status (None: unreachable).

        ``promise``: the one this write made for these rows (kept here).
        """
        statuses: dict[Target, int | None] = {}
        object_row = len(names) == 3 and method in ("PUT", "DELETE")

        async def one(t: Target) -> None:
            path = "/" + "/".join([t.device, str(t.partition), *names])
            try:
                if object_row:
                    queue = (t, names[0], names[1])
                    if promise is not None:
                        # No checkpoint between keeping and joining: a leader
                        # woken by this cannot close its batch before the row is in.
                        promise.keep(queue)
                    status = await self._rows.submit(
                        queue, _Row(method, names[2], headers, rid),
                        functools.partial(self._send_rows, t, names[0], names[1]))
                else:
                    status = await self._request(t, method, path, headers, rid)
                statuses[t] = status
                error = "" if 200 <= status < 300 else f"status {status}"
            except BackendError as exc:
                statuses[t] = None
                error = str(exc)
            if error:
                log_event(log, "storage.update_failed", level=logging.WARNING, rid=rid,
                          peer=f"{t.host}:{t.port}/{t.device}", path=path, error=error)

        async with trio.open_nursery() as nursery:
            for t in targets:
                nursery.start_soon(one, t)
        return statuses

    async def _request(self, t: Target, method: str, path: str, headers: dict[str, str],
                       rid: str, body: bytes = b"") -> int:
        resp = await self.client.request(method, t.host, t.port, urllib.parse.quote(path, safe="/"),
                                         [*headers.items(), ("X-Trans-Id", rid)], body,
                                         timeouts=self.timeouts)
        return resp.status

    async def _send_rows(self, t: Target, account: str, container: str, rows: list[_Row]) -> int:
        """One queued batch of object rows: a plain row request if alone, else an ``UPDATE``."""
        first = rows[0]
        if len(rows) == 1:
            path = "/" + "/".join([t.device, str(t.partition), account, container, first.obj])
            return await self._request(t, first.method, path, first.headers, first.rid)
        body = json.dumps({"rows": [{"method": r.method, "obj": r.obj, "headers": r.headers}
                                    for r in rows]}).encode()
        headers = {"X-Backend-Server": first.headers.get("X-Backend-Server", "container"),
                   "Content-Type": "application/json"}
        path = "/" + "/".join([t.device, str(t.partition), account, container])
        return await self._request(t, "UPDATE", path, headers, first.rid, body)

    async def send_or_save(self, kind: str, method: str, targets: list[Target],
                           names: list[str], headers: dict[str, str], rid: str,
                           device_path: Path, name_hash: str,
                           timestamp: Timestamp,
                           promise: RowPromise | None = None) -> dict[Target, int | None]:
        """:meth:`send`, and record an async pending for whatever failed.

        ``kind`` (``container`` or ``account``) is the server that takes the
        row; it goes out as ``X-Backend-Server``.
        """
        headers = {**headers, "X-Backend-Server": kind}
        statuses = await self.send(method, targets, names, headers, rid, promise)
        failed = [t for t, status in statuses.items() if status is None or not 200 <= status < 300]
        if failed:
            record = {
                "kind": kind, "op": method, "account": names[0],
                "container": names[1] if len(names) > 1 else None,
                "obj": names[2] if len(names) > 2 else None,
                "headers": headers, "targets": [asdict(t) for t in failed],
                "created": Timestamp.now().internal,
            }
            path = await trio.to_thread.run_sync(write_async_pending, device_path, name_hash,
                                                 timestamp, record)
            log_event(log, "storage.async_pending", rid=rid, path=str(path), kind=kind)
        return statuses
