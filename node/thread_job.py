"""A blocking call started in a worker thread now, its result awaited later.

``trio.to_thread.run_sync`` starts a call and waits for it in one step, so
the event loop cannot do anything else *for that task* meanwhile.  A
streaming reader wants to overlap: read and hash chunk N+1 from disk while
chunk N is still being sent.  :class:`ThreadJob` starts the call at once and
hands back something to await; the thread never holds the event loop.

A job cannot be cancelled once started (a thread cannot be interrupted);
owners of resources the call uses (an open file) must :meth:`wait` for it
before releasing them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import outcome
import trio

T = TypeVar("T")


class ThreadJob(Generic[T]):
    """``fn(*args)`` running in a worker thread; ``await job.result()`` for its value."""

    __slots__ = ("_done", "_outcome")

    def __init__(self, fn: Callable[..., T], *args: object) -> None:
        self._done = trio.Event()
        self._outcome: outcome.Outcome | None = None
        token = trio.lowlevel.current_trio_token()

        def deliver(result: outcome.Outcome) -> None:
            self._outcome = result
            try:
                token.run_sync_soon(self._done.set)
            except trio.RunFinishedError:
                pass  # nobody is left to collect it

        trio.lowlevel.start_thread_soon(lambda: fn(*args), deliver)

    async def result(self) -> T:
        """The call's return value, or its exception raised here."""
        await self._done.wait()
        assert self._outcome is not None
        return self._outcome.unwrap()

    async def wait(self) -> None:
        """Wait for the call to finish, ignoring its result and cancellation."""
        with trio.CancelScope(shield=True):
            await self._done.wait()
