"""GroupCommit: batching, error propagation, cancellation, cleanup."""

from __future__ import annotations

import trio
import trio.testing

from node.storage.group_commit import GroupCommit


async def test_a_failed_commit_reaches_every_member_and_the_queue_recovers() -> None:
    group: GroupCommit[int] = GroupCommit()
    committed: list[list[int]] = []
    gate = trio.Event()

    def commit(items: list[int]) -> None:
        trio.from_thread.run(gate.wait)
        if 13 in items:
            raise ValueError("disk on fire")
        committed.append(list(items))

    outcomes: dict[int, str] = {}

    async def submit(i: int) -> None:
        try:
            await group.submit("db", i, commit)
            outcomes[i] = "ok"
        except ValueError:
            outcomes[i] = "failed"

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit, 0)
            await trio.testing.wait_all_tasks_blocked()
            for i in range(10, 20):  # all queue behind the first batch, as one batch
                nursery.start_soon(submit, i)
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
        assert outcomes == {0: "ok", **{i: "failed" for i in range(10, 20)}}
        assert committed == [[0]]
        assert group.pending("db") == 0
        await group.submit("db", 99, commit)
    assert committed == [[0], [99]]


async def test_cancelled_submitters_do_not_stop_their_batch() -> None:
    group: GroupCommit[int] = GroupCommit()
    committed: list[list[int]] = []
    gate = trio.Event()

    def commit(items: list[int]) -> None:
        trio.from_thread.run(gate.wait)
        committed.append(list(items))

    async def impatient(item: int, task_status: trio.TaskStatus) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await group.submit("db", item, commit)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(group.submit, "db", 1, commit)
            await trio.testing.wait_all_tasks_blocked()
            leader = await nursery.start(impatient, 2)  # leads the second batch
            await trio.testing.wait_all_tasks_blocked()
            member = await nursery.start(impatient, 3)
            nursery.start_soon(group.submit, "db", 4, commit)
            await trio.testing.wait_all_tasks_blocked()
            leader.cancel()
            member.cancel()
            gate.set()
    assert committed == [[1], [2, 3, 4]]
    assert group.batches == 2 and group.items == 4
    assert group.pending("db") == 0
