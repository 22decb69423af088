"""A node's threads run under ``SCHED_BATCH``: waking a thread does not preempt the waker.

Every request crosses threads.  The event loop hands each blocking step (an
object written and fsynced, a SQLite commit) to a worker thread and takes the
result back, and the workers wake the loop in turn.  Under the default
policy the kernel lets a freshly woken thread preempt the running one at
once, and with the GIL that is a convoy: the loop releases a worker and is
switched out mid-step; the worker runs until it needs the GIL the loop still
holds, and sleeps; the loop is switched back in.  A profile of a storage
node under 4 KiB PUTs had its event loop preempted inside
``ThreadCache.start_thread_soon`` for a fifth of its busy time, and ~140
context switches per PUT across the four nodes.

Under ``SCHED_BATCH`` a wakeup waits until the running thread blocks or its
time slice ends (batch threads are still scheduled fairly, just never by
preempting on wakeup), which is what a node wants: its threads cooperate,
and each blocks again within a fraction of a millisecond.  Measured with
four nodes on this 2-core machine, 2000 4 KiB PUTs at concurrency 32
(two rounds each, the normal policy first): whole-machine CPU per PUT
13.2 / 11.0 and 11.6 / 10.6 ms → 10.1 / 9.1 and 10.8 / 9.7 ms; PUT/s
148 / 174 and 164 / 181 → 191 / 213 and 177 / 199.

Threads inherit the policy of the thread that starts them, so the node sets
it in its main thread before starting any (and on the few native threads
libraries start at import).  No privilege is needed to
choose it; ``batch_scheduling = false`` in the node's TOML turns it off.
"""

from __future__ import annotations

import os


def batch_policy() -> bool:
    """Put every thread of this process, and the threads they start from now on,
    under ``SCHED_BATCH``; False where the platform has no such policy.

    Threads that exist already (a library's native helpers started at import)
    are changed one by one; later ones inherit the policy.
    """
    setter = getattr(os, "sched_setscheduler", None)
    batch = getattr(os, "SCHED_BATCH", None)
    if setter is None or batch is None:
        return False
    try:
        setter(0, batch, os.sched_param(0))
    except OSError:
        return False
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = []
    for tid in tids:
        try:
            setter(tid, batch, os.sched_param(0))
        except OSError:
            pass  # a thread that has just exited
    return True
