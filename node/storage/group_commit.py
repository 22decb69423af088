"""Group commit: many concurrent row updates to one database, one transaction.

Thirty-two clients writing into one container send thirty-two object rows
to each container replica at once.  Committed one by one, every row costs
a worker-thread hop and a WAL fsync while the others queue behind the
connection's lock, so the last one waits for all of them.  Swift batches
the same way through a ``.pending`` file; here the batching happens in
memory, before anything is acknowledged:

* the first update for a database opens a *batch* and leads it; updates
  arriving while the batch is open join it;
* the leader waits until the database's previous batch has committed (at
  most one commit per database is in flight), closes its batch, and
  commits every row of it in one transaction in one worker thread;
* then every member of the batch is woken with the outcome: all rows are
  durable together, or none is and every member sees the error.

Nothing is acknowledged before its transaction commits (``synchronous =
FULL``), so a crash in the middle of a batch loses only rows nobody was
told about.  Rows within a batch keep their arrival order, and the merge
itself decides newest-wins per name, so batching never changes the result.

The same queue discipline serves the sending side (``blocking=False``):
object servers send container rows through it, so rows for one container
replica that pile up while a request to it is in flight go out together
in the next one (:class:`node.storage.updates.UpdateSender`).  A sender
that knows more items are on their way passes ``gather``: each leader
awaits it, its batch still open, once it is its turn.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

import trio

Item = TypeVar("Item")


class _Batch(Generic[Item]):
    __slots__ = ("items", "done", "error", "result")

    def __init__(self, first: list[Item]) -> None:
        self.items: list[Item] = list(first)
        self.done = trio.Event()
        self.error: BaseException | None = None
        self.result: Any = None


class _Queue(Generic[Item]):
    __slots__ = ("open", "committing")

    def __init__(self) -> None:
        #: the batch still taking members (its leader is waiting for its turn)
        self.open: _Batch[Item] | None = None
        #: the batch whose transaction is running
        self.committing: _Batch[Item] | None = None


class GroupCommit(Generic[Item]):
    """Batches items per key and applies each batch with one blocking call.

    ``await group.submit(key, item, commit)`` returns what ``commit(items)``
    -- called in a worker thread with ``item`` among ``items`` -- returned,
    and raises what it raised.  Every call for one ``key`` must pass a
    ``commit`` that does the same thing (the leader's is used).  With
    ``blocking=False``, ``commit`` is a coroutine function awaited in the
    leader's task instead.  ``gather(key)``, if given, is awaited by every
    leader just before it closes its batch; it must return in bounded time
    (the leader is shielded from cancellation).
    """

    def __init__(self, *, blocking: bool = True,
                 gather: Callable[[Hashable], Awaitable[None]] | None = None) -> None:
        self._blocking = blocking
        self._gather = gather
        self._queues: dict[Hashable, _Queue[Item]] = {}
        #: how many items and batches have been committed (or failed)
        self.items = 0
        self.batches = 0

    def pending(self, key: Hashable) -> int:
        """Items waiting for or in a commit of ``key`` (for tests and metrics)."""
        queue = self._queues.get(key)
        if queue is None:
            return 0
        return sum(len(b.items) for b in (queue.open, queue.committing) if b is not None)

    async def submit(self, key: Hashable, item: Item,
                     commit: Callable[[list[Item]], Any | Awaitable[Any]]) -> Any:
        return await self.submit_many(key, [item], commit)

    async def submit_many(self, key: Hashable, items: list[Item],
                          commit: Callable[[list[Item]], Any | Awaitable[Any]]) -> Any:
        """:meth:`submit` for several items that must land in the same batch."""
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue()
        batch = queue.open
        if batch is not None:
            batch.items.extend(items)
            await batch.done.wait()
        else:
            batch = queue.open = _Batch(items)
            # Shielded: the members depend on the leader finishing the batch.
            with trio.CancelScope(shield=True):
                await self._lead(key, queue, batch, commit)
        if batch.error is not None:
            raise batch.error
        return batch.result

    async def _lead(self, key: Hashable, queue: _Queue[Item], batch: _Batch[Item],
                    commit: Callable[[list[Item]], Any]) -> None:
        try:
            if queue.committing is not None:
                await queue.committing.done.wait()
            if self._gather is not None:
                await self._gather(key)
            queue.open = None  # later arrivals start the next batch
            queue.committing = batch
            self.items += len(batch.items)
            self.batches += 1
            try:
                if self._blocking:
                    batch.result = await trio.to_thread.run_sync(commit, batch.items)
                else:
                    batch.result = await commit(batch.items)
            except Exception as exc:
                batch.error = exc
        finally:
            queue.committing = None
            if queue.open is None and self._queues.get(key) is queue:
                del self._queues[key]
            batch.done.set()
