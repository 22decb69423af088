"""ThreadJob: a call started in a worker thread, awaited later."""

from __future__ import annotations

import threading

import pytest
import trio

from node.thread_job import ThreadJob


async def test_runs_in_another_thread_while_the_loop_goes_on():
    release = threading.Event()
    loop_thread = threading.get_ident()
    job = ThreadJob(lambda: (release.wait(5), threading.get_ident())[1])
    await trio.sleep(0.01)  # the loop is free while the call blocks
    release.set()
    assert await job.result() != loop_thread


async def test_exceptions_come_back_to_the_awaiting_task():
    def boom() -> None:
        raise ValueError("disk said no")

    job = ThreadJob(boom)
    with pytest.raises(ValueError, match="disk said no"):
        await job.result()


async def test_wait_outlives_cancellation():
    release = threading.Event()
    finished = []
    job = ThreadJob(lambda: (release.wait(5), finished.append(True)))
    with trio.CancelScope() as scope:
        scope.cancel()
        trio.lowlevel.current_trio_token().run_sync_soon(release.set)
        await job.wait()  # shielded: returns only once the call is done
    assert finished == [True]
