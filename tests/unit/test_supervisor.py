"""The supervisor restarts crashed services and lets finished ones end."""

import logging

import trio

from node.supervisor import supervise


async def test_crashing_service_is_restarted_and_logged(caplog):
    runs = []

    async def flaky():
        runs.append(trio.current_time())
        if len(runs) < 3:
            raise RuntimeError("boom")

    with caplog.at_level(logging.INFO, logger="peerstack.supervisor"):
        with trio.fail_after(5):
            await supervise("flaky", flaky, first_delay=0.01)
    assert len(runs) == 3
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events.count("service.crash") == 2
    assert events.count("service.restart") == 2
    assert events[-1] == "service.exit"
    # backoff grows: the second wait is longer than the first
    assert runs[2] - runs[1] > runs[1] - runs[0]
