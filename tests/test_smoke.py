"""The seed flow end to end."""

from __future__ import annotations

import threading

import arkworker
from arkworker import ThreadWorker, WorkerState


async def test_seed_flow(scripts):
    """The ported seed: post "hello world", read "success" from messages(), exit code 0."""
    async with ThreadWorker(scripts / "hello.py") as w:
        await w.post_message("hello world")
        async for reply in w.messages():
            assert reply == "success"
            break
    assert w.state is WorkerState.TERMINATED
    assert w.exit_code == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("arkworker-")]


async def test_request_round_trip(scripts):
    """request() returns the handler's return value."""
    async with ThreadWorker(scripts / "echo.py") as w:
        assert await w.request({"a": [1, 2]}) == ("echo", {"a": [1, 2]})
        assert arkworker.WorkerState.RUNNING is w.state
