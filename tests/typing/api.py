"""Checked by mypy --strict in CI, never run: the public API as a user's type checker sees it."""

from __future__ import annotations

import pathlib
from typing import Any, assert_type

import arkworker
from arkworker import (
    ErrorEvent,
    MessageEvent,
    ThreadWorker,
    ThreadWorkerGlobalScope,
    ThreadWorkerPriority,
    WorkerState,
    WorkerStatistics,
    worker_port,
)


def on_message(event: MessageEvent[int]) -> int:
    return event.data * 2


async def on_error(event: ErrorEvent) -> None:
    assert_type(event.error, BaseException | None)
    assert_type(event.lineno, int)


def setup(port: ThreadWorkerGlobalScope) -> None:
    port.onmessage = on_message
    assert_type(port.name, str | None)


async def host() -> None:
    w = ThreadWorker("examples/workers/hello.py", name="hello", priority=ThreadWorkerPriority.LOW)
    assert_type(w.state, WorkerState)
    assert_type(w.exit_code, int | None)
    assert_type(w.statistics(), WorkerStatistics)
    w.onerror = on_error
    w.on("message", on_message)
    await w.post_message({"any": "picklable data"})
    assert_type(await w.request(21, timeout=1.0), Any)
    async for data in w.messages():
        assert_type(data, Any)
    assert_type(await w.terminate(), int)
    assert_type(await w.wait(), int)

    async with ThreadWorker(setup, loop_factory="uvloop", clone=False) as w2:
        assert_type(w2, ThreadWorker[Any, Any])

    # The message types of a worker: what the host posts, and what the worker posts back.
    typed: ThreadWorker[int, str] = ThreadWorker(setup)
    typed.post_message(21)
    typed.post_message("not an int")  # type: ignore[arg-type]
    async for reply in typed.messages():
        assert_type(reply, str)
    async with typed as same:
        assert_type(same, ThreadWorker[int, str])
    ThreadWorker(pathlib.Path("examples/workers/hello.py"))
    arkworker.set_max_workers(8)


def in_worker() -> None:
    assert_type(worker_port, ThreadWorkerGlobalScope)
    worker_port.post_message("reply")
    assert_type(worker_port.call_global_call_object_method("obj", "method", 1000, 1, 2), Any)
