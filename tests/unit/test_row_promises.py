"""Row promises: a batch of container rows waits for the rows of writes in progress.

The queue discipline only; the network part of :class:`UpdateSender` is
replaced by a recorder (the storage integration tests send real rows).
"""

from __future__ import annotations

import trio

from node.http_client import HTTPClient
from node.storage.updates import Target, UpdateSender

REPLICA = Target("127.0.0.1", 6201, "d1", 5)
OTHER = Target("127.0.0.1", 6202, "d1", 5)


class RecordingSender(UpdateSender):
    """Records each batch (object names) and the time it left, instead of sending it."""

    def __init__(self) -> None:
        super().__init__(HTTPClient(), gather_timeout=0.05)
        self.batches: list[tuple[float, list[str]]] = []

    async def _send_rows(self, t, account, container, rows) -> int:
        self.batches.append((trio.current_time(), [r.obj for r in rows]))
        await trio.sleep(0.001)  # a request in flight
        return 204


async def put_row(sender: UpdateSender, name: str, promise=None, targets=(REPLICA,)) -> None:
    statuses = await sender.send("PUT", list(targets), ["a", "c", name],
                                 {"X-Timestamp": "1"}, "tx", promise)
    assert set(statuses.values()) == {204}


async def test_a_batch_waits_for_rows_promised_before_it_left(autojump_clock) -> None:
    sender = RecordingSender()
    first = sender.promise([REPLICA], "a", "c")
    second = sender.promise([REPLICA], "a", "c")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(put_row, sender, "first", first)
        await trio.sleep(0.01)  # the second write is still being stored
        assert sender.batches == []
        nursery.start_soon(put_row, sender, "second", second)
    assert sender.batches == [(0.01, ["first", "second"])]


async def test_with_nothing_promised_a_row_leaves_at_once(autojump_clock) -> None:
    sender = RecordingSender()
    await put_row(sender, "alone")
    other = sender.promise([OTHER], "a", "c")  # another replica's queue: not waited for
    await put_row(sender, "again")
    other.release()
    assert sender.batches == [(0.0, ["alone"]), (0.001, ["again"])]


async def test_a_withdrawn_promise_lets_the_batch_go(autojump_clock) -> None:
    sender = RecordingSender()
    kept = sender.promise([REPLICA], "a", "c")
    async with trio.open_nursery() as nursery:
        with sender.promise([REPLICA], "a", "c"):  # a write that fails (409, 507...)
            nursery.start_soon(put_row, sender, "kept", kept)
            await trio.sleep(0.02)
            assert sender.batches == []
        # leaving the block withdrew the failed write's promise
    assert sender.batches == [(0.02, ["kept"])]


async def test_the_wait_is_bounded_and_later_promises_are_not_waited_for(autojump_clock) -> None:
    sender = RecordingSender()
    first = sender.promise([REPLICA], "a", "c")
    stuck = sender.promise([REPLICA], "a", "c")  # never keeps its word
    async with trio.open_nursery() as nursery:
        nursery.start_soon(put_row, sender, "first", first)
        await trio.sleep(0.01)
        later = sender.promise([REPLICA], "a", "c")  # after the batch began to wait
        await trio.sleep(0.1)
    assert sender.batches == [(0.05, ["first"])]  # left at the timeout, without "stuck"
    stuck.release()
    # the later write's row: the queue is idle, nothing promised before it is missing
    await put_row(sender, "later", later)
    assert sender.batches[-1] == (0.11, ["later"])
    assert sender._promised == {}  # nothing left behind
