"""node.scheduling: SCHED_BATCH for a process's threads and the threads they start."""

import os
import subprocess
import sys


def test_batch_policy_covers_existing_and_new_threads() -> None:
    """Run in a child process: the policy is process-wide, the test runner's threads stay as they are."""
    code = (
        "import os, threading, time\n"
        "from node.scheduling import batch_policy\n"
        "stop = threading.Event()\n"
        "old = threading.Thread(target=stop.wait); old.start()\n"
        "assert batch_policy()\n"
        "seen = []\n"
        "new = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(0))); new.start(); new.join()\n"
        "tids = [int(t) for t in os.listdir('/proc/self/task')]\n"
        "print(sorted({os.sched_getscheduler(t) for t in tids}), seen)\n"
        "stop.set()\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.split() == [f"[{os.SCHED_BATCH}]", f"[{os.SCHED_BATCH}]"]
