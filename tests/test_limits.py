"""Section 6: the process-wide worker limit, nested workers, and statistics()."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import os
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvloop

import arkworker
from arkworker import (
    ParameterError,
    ThreadWorker,
    WorkerInitializationError,
    WorkerState,
    WorkerStatistics,
)


def idle(port: object) -> None:
    """A worker that does nothing until it is terminated."""


def thread_names() -> set[str]:
    return {t.name for t in threading.enumerate()}


@contextlib.asynccontextmanager
async def many(n: int, script: Callable[[object], object] = idle) -> AsyncIterator[list[ThreadWorker]]:
    """Start ``n`` workers; terminate them all and wait for their exit on leaving."""
    workers: list[ThreadWorker] = []
    try:
        for _ in range(n):
            workers.append(ThreadWorker(script))
        yield workers
    finally:
        async with asyncio.timeout(10):
            await asyncio.gather(*(w.terminate() for w in workers))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def closes_itself(port: Any) -> None:
    port.close()


def fails_to_start(port: Any) -> None:
    raise RuntimeError("cannot start")


def answers(port: Any) -> None:
    port.onmessage = lambda e: e.data


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
@pytest.mark.parametrize(
    "end",
    [
        "terminated",
        "terminated, uvloop",
        "closed itself",
        "failed to start",
        "refused",
        "no thread",
        "interrupted",
    ],
)
async def test_a_worker_leaves_no_file_descriptor_open(monkeypatch, end):
    """However a worker ends, or fails to start, every descriptor it opened (its loop's, its channels')
    is closed by the time its exit settles or its constructor raises."""
    async with ThreadWorker(answers, loop_factory="uvloop") as warm_up:  # uvloop's first use, logging's
        await warm_up.request(None)
    arkworker.set_max_workers(1)
    gc.collect()  # the loops of earlier tests, and their descriptors, are freed first
    before = open_fds()
    async with asyncio.timeout(10):
        if end.startswith("terminated"):
            w = ThreadWorker(answers, loop_factory="uvloop" if "uvloop" in end else None)
            assert await w.request("x") == "x"
            await w.terminate()
        elif end == "closed itself":
            await ThreadWorker(closes_itself).wait()
        elif end == "failed to start":
            failed = ThreadWorker(fails_to_start)
            failed.onerror = lambda e: None
            await failed.wait()
        elif end == "refused":
            async with ThreadWorker(idle) as holder:
                during = open_fds()
                with pytest.raises(WorkerInitializationError):
                    ThreadWorker(idle)
                assert open_fds() == during
            await holder.wait()
        elif end == "no thread":
            with monkeypatch.context() as patched:
                patched.setattr(threading.Thread, "start", no_thread)
                with pytest.raises(WorkerInitializationError):
                    ThreadWorker(idle)
        else:  # interrupted after its slot was taken, before its thread was started
            with monkeypatch.context() as patched:
                patched.setattr(arkworker._hostloop, "track", interrupt)
                with pytest.raises(KeyboardInterrupt):
                    ThreadWorker(idle)
            async with ThreadWorker(idle):  # its slot is free again
                pass
    assert open_fds() == before


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_a_worker_outliving_its_host_loop_frees_its_slot_and_then_its_descriptors():
    """A worker whose host loop was closed by hand before it ended frees its slot as it ends, and its
    descriptors are closed once its handle and that loop are freed."""
    arkworker.set_max_workers(1)
    gc.collect()  # the loops of earlier tests, and their descriptors, are freed first
    before = open_fds()
    gate = threading.Event()

    def waits(port: Any) -> None:
        port.onmessage = lambda e: (gate.wait(10), port.close())

    async def start() -> ThreadWorker:
        worker = ThreadWorker(waits, name="outlives")
        worker.post_message("close after the gate")
        return worker

    loop = asyncio.new_event_loop()
    try:
        w = loop.run_until_complete(start())
        (thread,) = [t for t in threading.enumerate() if t.name == "arkworker-outlives"]
    finally:
        loop.close()  # without asyncio.run's shutdown: nothing terminates the worker
        gate.set()
    thread.join(10)
    assert not thread.is_alive()
    assert arkworker._limits._slots == {}  # the next worker is admitted
    assert open_fds() > before
    del w, loop
    gc.collect()
    assert open_fds() == before


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_a_host_loop_is_freed_after_its_end_with_its_descriptors():
    """asyncio.run's end closes every descriptor its workers and the loop's wake-ups opened, and once the
    workers' handles are dropped nothing keeps the loop (or its workers) alive."""
    gc.collect()
    before = open_fds()
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []
    handles: list[ThreadWorker] = []

    async def main() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        async with asyncio.timeout(10):
            async with ThreadWorker(answers) as w:
                assert await w.request("x") == "x"
            handles.append(ThreadWorker(answers))  # left running: the loop's end terminates it
            assert await handles[-1].request("y") == "y"

    asyncio.run(main())
    assert handles[0].exit_code == 0
    assert open_fds() == before
    handles.clear()
    gc.collect()
    assert loops[0]() is None


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_a_worker_started_by_an_exit_callback_as_the_loop_ends_is_terminated_too():
    """A supervisor-like onexit that starts a replacement while the loop's end terminates the workers:
    the replacement is terminated too before the loop closes, and nothing it opened stays open."""
    gc.collect()
    before = open_fds()
    replacements: list[ThreadWorker] = []

    async def main() -> None:
        w = ThreadWorker(answers, name="replaced")
        w.onexit = lambda code: replacements.append(ThreadWorker(answers, name="replacement"))
        async with asyncio.timeout(10):
            assert await w.request(1) == 1

    asyncio.run(main())
    (replacement,) = replacements
    assert replacement.exit_code == 0
    assert "arkworker-replacement" not in thread_names()
    replacements.clear()
    assert open_fds() == before


def interrupt(*args: object) -> None:
    raise KeyboardInterrupt


def no_thread(self: threading.Thread) -> None:
    raise RuntimeError("can't start new thread")


# -- the limit ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("loop_factory", [None, "uvloop"])
async def test_a_workers_default_executor_threads_end_with_the_worker(loop_factory):
    """asyncio.to_thread in a worker runs in a pool thread named after the worker, and the pool's threads
    have ended once the worker's exit has settled."""

    def script(port):
        async def on_message(e):
            return await asyncio.to_thread(lambda: threading.current_thread().name)

        port.onmessage = on_message

    w = ThreadWorker(script, name="pooled", loop_factory=loop_factory)
    assert (await asyncio.wait_for(w.request("where?"), 5)).startswith("arkworker-pooled-pool")
    assert await asyncio.wait_for(w.terminate(), 5) == 0
    assert not [t.name for t in threading.enumerate() if t.name.startswith("arkworker-pooled")]


@pytest.mark.parametrize(
    "new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
async def test_a_default_executor_set_by_the_loop_factory_is_kept(new_loop):
    """A loop_factory that gives its loop a default executor of its own keeps it: to_thread runs there,
    also on a uvloop loop, which does not show whether it has one."""
    own = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="own-pool")

    def loop_with_executor() -> asyncio.AbstractEventLoop:
        loop = new_loop()
        loop.set_default_executor(own)
        return loop

    def script(port):
        async def on_message(e):
            return await asyncio.to_thread(lambda: threading.current_thread().name)

        port.onmessage = on_message

    try:
        async with ThreadWorker(script, loop_factory=loop_with_executor) as w:
            assert (await asyncio.wait_for(w.request("where?"), 5)).startswith("own-pool")
    finally:
        own.shutdown()


async def test_default_limit_is_64_live_workers():
    """64 workers can live at once and the 65th is refused with WorkerInitializationError naming the limit."""
    async with many(64) as workers:
        assert len(workers) == 64
        with pytest.raises(WorkerInitializationError) as info:
            ThreadWorker(idle)
        assert info.value.code == 10200003
        assert "64" in str(info.value)


async def test_set_max_workers_changes_the_limit():
    """set_max_workers(3) lets three workers live and refuses the fourth, naming the limit 3."""
    arkworker.set_max_workers(3)
    async with many(3):
        with pytest.raises(WorkerInitializationError) as info:
            ThreadWorker(idle)
        assert info.value.code == 10200003
        assert "3" in str(info.value)


async def test_raising_the_limit_admits_more_workers():
    """After the cap was hit, raising it with set_max_workers admits a new worker at once."""
    arkworker.set_max_workers(2)
    async with many(2):
        with pytest.raises(WorkerInitializationError):
            ThreadWorker(idle)
        arkworker.set_max_workers(3)
        async with ThreadWorker(idle) as third:
            assert third.state in (WorkerState.STARTING, WorkerState.RUNNING)


async def test_refused_worker_starts_no_thread():
    """A worker refused at the cap leaves no thread behind and takes no slot."""
    arkworker.set_max_workers(1)
    async with many(1):
        before = thread_names()
        for _ in range(3):
            with pytest.raises(WorkerInitializationError):
                ThreadWorker(idle, name="refused")
        assert thread_names() == before
    async with ThreadWorker(idle):  # the refused attempts took no slot
        pass


async def test_worker_whose_thread_cannot_start_raises_and_frees_its_slot(monkeypatch):
    """When the OS gives no thread, ThreadWorker() raises WorkerInitializationError and keeps no slot."""
    arkworker.set_max_workers(1)

    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", no_thread)
        for _ in range(2):
            with pytest.raises(WorkerInitializationError, match="can't start new thread"):
                ThreadWorker(idle)
    async with ThreadWorker(idle) as w:  # the one slot is free again
        assert w.state is not WorkerState.TERMINATED
    assert w.exit_code == 0


@pytest.mark.parametrize("thread_made", [False, True], ids=["before-the-os-thread", "after-the-os-thread"])
async def test_an_interrupted_start_runs_nothing_and_frees_its_slot(monkeypatch, thread_made):
    """A KeyboardInterrupt inside the thread's start reaches the caller as itself. Whether or not the OS
    thread was made, the worker's top level never runs, any thread made ends, the slot is free again, and
    the interpreter's exit hook has nothing to wait for."""
    arkworker.set_max_workers(1)
    ran = threading.Event()
    start = threading.Thread.start
    started: list[threading.Thread] = []

    def interrupted(self: threading.Thread) -> None:
        if thread_made:
            start(self)
            started.append(self)
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", interrupted)
        with pytest.raises(KeyboardInterrupt):
            ThreadWorker(lambda port: ran.set(), name="interrupted")
    for thread in started:
        thread.join(10)
        assert not thread.is_alive()
    assert not ran.is_set()
    arkworker._limits._stop_all(timeout=1)  # joins nothing, raises nothing
    async with ThreadWorker(idle) as w:  # the one slot is free again
        assert w.state is not WorkerState.TERMINATED
    assert w.exit_code == 0


async def test_lowering_the_limit_below_the_live_count():
    """Lowering the limit keeps live workers running but admits a new one only once enough have exited."""
    async with many(3) as workers:
        arkworker.set_max_workers(2)
        with pytest.raises(WorkerInitializationError):
            ThreadWorker(idle)
        await workers[0].terminate()
        with pytest.raises(WorkerInitializationError):
            ThreadWorker(idle)
        await workers[1].terminate()
        async with ThreadWorker(idle):
            assert workers[2].state is not WorkerState.TERMINATED


async def test_slot_frees_after_terminate():
    """After `await w.terminate()` at the cap, a new worker can be created."""
    arkworker.set_max_workers(2)
    async with many(2) as workers:
        await workers[0].terminate()
        async with ThreadWorker(idle) as replacement:
            assert replacement.state is not WorkerState.TERMINATED


async def test_slot_frees_only_once_the_thread_has_ended():
    """A worker that is terminating but whose thread still runs keeps its slot until the thread ends."""
    gate = threading.Event()

    def blocked(port):
        port.onmessage = lambda e: gate.wait(10)

    arkworker.set_max_workers(1)
    w = ThreadWorker(blocked)
    try:
        w.post_message("block")
        exit_code = w.terminate()  # queued behind the blocked handler: the thread keeps running
        assert w.state is WorkerState.TERMINATING
        with pytest.raises(WorkerInitializationError):
            ThreadWorker(idle)
    finally:
        gate.set()
    async with asyncio.timeout(10):
        assert await exit_code == 0
    async with ThreadWorker(idle):
        pass


@pytest.mark.parametrize("bad", [0, -1, 2.5, "3", None, True, False])
def test_set_max_workers_rejects_bad_values(bad):
    """set_max_workers with a non-int, a bool or a value below 1 raises ParameterError (code 401)."""
    with pytest.raises(ParameterError) as info:
        arkworker.set_max_workers(bad)
    assert info.value.code == 401


async def test_rejected_set_max_workers_keeps_the_previous_limit():
    """A rejected set_max_workers call leaves the limit in force unchanged."""
    arkworker.set_max_workers(1)
    with pytest.raises(ParameterError):
        arkworker.set_max_workers(0)
    async with many(1):
        with pytest.raises(WorkerInitializationError):
            ThreadWorker(idle)


# -- nested workers ----------------------------------------------------------------------------------


async def test_nested_worker_messages_flow_both_ways(scripts):
    """A worker can create its own worker, request it and read what the child posts back."""
    async with ThreadWorker(scripts / "lim_parent.py") as parent:
        async with asyncio.timeout(10):
            assert await parent.request(("spawn", "lim-kid")) == 1
            reply, posted = await parent.request(("ask", {"n": 7}))
    assert reply == ("child replied", {"n": 7}, "arkworker-lim-kid")
    assert posted == ("child posted", {"n": 7})


async def test_nested_worker_counts_toward_the_limit(scripts):
    """A child created inside a worker takes a slot, so the host cannot go past the cap."""
    arkworker.set_max_workers(2)
    async with ThreadWorker(scripts / "lim_parent.py") as parent:
        async with asyncio.timeout(10):
            await parent.request(("spawn", "lim-kid"))
        with pytest.raises(WorkerInitializationError):
            ThreadWorker(idle)


async def test_worker_cannot_create_a_child_past_the_limit(scripts):
    """A worker creating a child when the host's workers fill the cap gets WorkerInitializationError."""
    arkworker.set_max_workers(2)
    async with ThreadWorker(scripts / "lim_parent.py") as parent, ThreadWorker(idle):
        async with asyncio.timeout(10):
            with pytest.raises(WorkerInitializationError) as info:
                await parent.request(("spawn", "lim-kid"))
    assert info.value.code == 10200003
    assert "lim-kid" not in str(thread_names())


@pytest.mark.parametrize("how", ["terminate", "close", "crash"])
async def test_children_are_terminated_when_their_worker_exits(scripts, how):
    """When a worker exits (terminated, closed itself, or crashed) its children's threads are gone too."""
    parent = ThreadWorker(scripts / "lim_parent.py")
    errors: list[arkworker.ErrorEvent] = []
    parent.onerror = errors.append
    async with asyncio.timeout(10):
        await parent.request(("spawn", "lim-orphan-1"))
        await parent.request(("spawn", "lim-orphan-2"))
        assert {"arkworker-lim-orphan-1", "arkworker-lim-orphan-2"} <= thread_names()
        if how == "terminate":
            await parent.terminate()
        elif how == "close":
            await parent.request(("close", None))
            await parent.wait()
        else:
            parent.post_message(("crash", None))
            assert await parent.wait() == 1
            assert len(errors) == 1
    assert not {"arkworker-lim-orphan-1", "arkworker-lim-orphan-2"} & thread_names()
    async with ThreadWorker(idle):  # and their slots are free again
        pass


# -- statistics() ------------------------------------------------------------------------------------


async def test_statistics_is_a_frozen_snapshot(scripts):
    """statistics() returns a frozen WorkerStatistics that does not change as the worker goes on."""
    async with ThreadWorker(scripts / "lim_stats.py") as w:
        before = w.statistics()
        assert isinstance(before, WorkerStatistics)
        with pytest.raises(AttributeError):
            before.messages_sent = 99  # type: ignore[misc]
        async with asyncio.timeout(10):
            await w.request("x")
        assert before.messages_sent == 0
        assert before.requests == 0
        assert w.statistics().messages_sent == 1


async def test_statistics_counts_messages_requests_and_host_inbox(scripts):
    """statistics() counts sent messages, requests, received messages and replies, and unread host messages."""
    async with ThreadWorker(scripts / "lim_stats.py") as w:
        first = w.statistics()
        assert first.state in (WorkerState.STARTING, WorkerState.RUNNING)
        assert (first.messages_sent, first.messages_received, first.requests) == (0, 0, 0)
        assert (first.errors, first.discarded, first.host_inbox_depth) == (0, 0, 0)
        async with asyncio.timeout(10):
            assert await w.request("x") == "x"
            s = w.statistics()
            assert s.state is WorkerState.RUNNING
            assert (s.messages_sent, s.messages_received, s.requests) == (1, 1, 1)

            w.post_message("ping")  # the worker posts "pong" before it answers the next request
            assert await w.request("y") == "y"
            s = w.statistics()
            assert (s.messages_sent, s.messages_received, s.requests) == (3, 3, 2)
            assert s.host_inbox_depth == 1  # "pong" is waiting for messages()

            async for reply in w.messages():
                assert reply == "pong"
                break
            assert w.statistics().host_inbox_depth == 0
    final = w.statistics()
    assert final.state is WorkerState.TERMINATED
    assert (final.errors, final.host_inbox_depth) == (0, 0)


async def test_clean_terminate_discards_nothing(scripts, caplog):
    """After a worker handled everything and was terminated, statistics() shows nothing queued or discarded."""
    caplog.set_level(logging.WARNING, logger="arkworker")
    w = ThreadWorker(scripts / "lim_stats.py")
    async with asyncio.timeout(10):
        assert await w.request("x") == "x"
        assert await w.terminate() == 0
    final = w.statistics()
    assert final.state is WorkerState.TERMINATED
    assert (final.inbox_depth, final.discarded) == (0, 0)
    assert not [r for r in caplog.records if "unhandled" in r.getMessage()]


async def test_statistics_inbox_depth_counts_unhandled_messages():
    """inbox_depth counts messages posted to the worker that it has not handled yet."""
    gate = threading.Event()

    def blocked(port):
        port.onmessage = lambda e: gate.wait(10) if e.data == "block" else None

    w = ThreadWorker(blocked)
    try:
        w.post_message("block")
        w.post_message("a")
        w.post_message("b")
        assert w.statistics().inbox_depth in (2, 3)  # "a" and "b" wait; "block" may count until it returns
    finally:
        gate.set()
    async with asyncio.timeout(10):
        assert await w.terminate() == 0


async def test_statistics_counts_errors(scripts):
    """A worker error reported to the host is counted in errors."""
    w = ThreadWorker(scripts / "lim_stats.py")
    seen: asyncio.Future[arkworker.ErrorEvent] = asyncio.get_running_loop().create_future()
    w.onallerrors = seen.set_result
    async with asyncio.timeout(10):
        w.post_message("boom")
        event = await seen
        assert isinstance(event.error, ValueError)
        assert w.statistics().errors == 1
        assert await w.terminate() == 1


async def test_statistics_counts_discarded_messages():
    """Messages still queued when the worker closes itself are counted in discarded."""
    gate = threading.Event()

    def closes(port):
        def on_message(e):
            if e.data == "close":
                gate.wait(10)
                port.close()

        port.onmessage = on_message

    w = ThreadWorker(closes)
    try:
        w.post_message("close")
        w.post_message("lost 1")
        w.post_message("lost 2")
    finally:
        gate.set()
    async with asyncio.timeout(10):
        assert await w.wait() == 0
    s = w.statistics()
    assert s.state is WorkerState.TERMINATED
    assert s.discarded == 2


async def test_statistics_counts_messages_of_a_worker_that_failed_to_start():
    """Messages posted to a worker whose top level failed are counted in discarded, no more and no fewer."""

    def fails(port):
        raise RuntimeError("cannot start")

    w = ThreadWorker(fails)
    errors: list[arkworker.ErrorEvent] = []
    w.onerror = errors.append
    w.post_message("never handled 1")
    w.post_message("never handled 2")
    async with asyncio.timeout(10):
        assert await w.wait() == 1
    assert len(errors) == 1
    s = w.statistics()
    assert (s.messages_sent, s.errors, s.discarded) == (2, 1, 2)
