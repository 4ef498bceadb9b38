"""Messaging between host and worker: post_message, backpressure, messages(), request() and statistics()."""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
import traceback
import warnings

import anyio
import pytest
from support import answer, drain, echo, take, wait_thread

from arkworker import ThreadWorker, WorkerError, WorkerState

TIMEOUT = 5


# -- post_message ---------------------------------------------------------------------------------


async def test_many_messages_arrive_in_order_none_lost():
    """Thousands of messages posted without awaiting reach the worker and come back all, in order."""
    seen: list[int] = []

    def setup(port):
        def on_message(e):
            seen.append(e.data)
            port.post_message(e.data)

        port.onmessage = on_message

    n = 2000
    async with ThreadWorker(setup) as w:
        for i in range(n):
            w.post_message(i)
        assert await take(w, n) == list(range(n))
    assert seen == list(range(n))


async def test_post_message_callable_from_sync_code_and_awaitable():
    """post_message works from a plain function and returns an awaitable that completes."""
    got = asyncio.Event()
    received: list[object] = []

    def on_message(e):
        received.append(e.data)
        got.set()

    async with ThreadWorker(echo) as w:
        w.onmessage = on_message

        def sync_caller():
            return w.post_message({"from": "sync"})

        result = sync_caller()
        assert inspect.isawaitable(result)
        await asyncio.wait_for(result, TIMEOUT)
        await asyncio.wait_for(got.wait(), TIMEOUT)
        assert received == [{"from": "sync"}]


async def test_backpressure_waits_while_worker_inbox_above_max_inbox():
    """await post_message() stays pending while the worker inbox is above max_inbox and completes once it drains."""
    entered = threading.Event()
    gate = threading.Event()
    handled: list[int] = []

    def setup(port):
        def on_message(e):
            if e.data == 0:
                entered.set()
                gate.wait(TIMEOUT)
            handled.append(e.data)

        port.onmessage = on_message

    async with ThreadWorker(setup, max_inbox=4) as w:
        w.post_message(0)
        assert await wait_thread(entered)
        for i in range(1, 3):
            w.post_message(i)
        at_limit = asyncio.ensure_future(w.post_message(3))  # depth 4 == max_inbox: no wait
        await asyncio.wait_for(at_limit, TIMEOUT)
        over = asyncio.ensure_future(w.post_message(4))  # depth 5 > max_inbox
        assert w.statistics().inbox_depth == 5
        done, _ = await asyncio.wait([over], timeout=0.05)
        assert not done, "post_message must wait while the worker inbox is above max_inbox"
        assert not over.done()
        gate.set()
        await asyncio.wait_for(over, TIMEOUT)
    assert handled == [0, 1, 2, 3, 4]


async def test_messages_posted_before_top_level_finished_are_delivered_after_it():
    """Messages posted while the script's top level still runs are queued and handled after it, in order."""
    entered = threading.Event()
    release = threading.Event()

    def setup(port):
        entered.set()
        release.wait(TIMEOUT)
        port.onmessage = lambda e: port.post_message(("late handler", e.data))

    async with ThreadWorker(setup) as w:
        w.post_message("a")
        assert await wait_thread(entered)
        assert w.state is WorkerState.STARTING
        w.post_message("b")
        w.post_message("c")
        release.set()
        assert await take(w, 3) == [("late handler", "a"), ("late handler", "b"), ("late handler", "c")]


def recording_loops():
    """A loop factory whose loops record what other threads schedule on them, and that record."""
    scheduled: list[object] = []

    class RecordingLoop(asyncio.SelectorEventLoop):
        def call_soon_threadsafe(self, callback, *args, context=None):
            scheduled.append(callback)
            return super().call_soon_threadsafe(callback, *args, context=context)

    return RecordingLoop, scheduled


async def test_messages_posted_while_the_top_level_runs_do_not_wake_the_worker_loop():
    """The worker loop's first callback runs the top level, then takes what was posted meanwhile: those
    posts schedule nothing on that loop, and every one of them is handled."""
    entered = threading.Event()
    release = threading.Event()
    loop_factory, scheduled = recording_loops()

    def setup(port):
        entered.set()
        release.wait(TIMEOUT)
        port.onmessage = lambda e: port.post_message(e.data)

    async with ThreadWorker(setup, loop_factory=loop_factory) as w:
        assert await wait_thread(entered)
        for i in range(3):
            w.post_message(i)
        assert scheduled == []
        release.set()
        assert await take(w, 3) == [0, 1, 2]


async def test_posts_right_after_construction_come_before_the_worker_begins():
    """The worker's thread waits until the host has started it, then for the GIL: what the host posts
    before it next yields is queued before the worker's first callback, so it wakes nothing."""
    loop_factory, scheduled = recording_loops()
    interval = sys.getswitchinterval()
    for _ in range(100):  # without the wait, the worker began first in about 40 % of them here
        scheduled.clear()
        sys.setswitchinterval(60)  # no GIL hand-over forced while the host posts: only its own yield counts
        try:
            w = ThreadWorker(echo, loop_factory=loop_factory)
            for i in range(3):
                w.post_message(i)
            woken = list(scheduled)
        finally:
            sys.setswitchinterval(interval)
        async with w:
            assert woken == []
            assert await take(w, 3) == [0, 1, 2]


async def test_messages_buffered_without_handler_then_read_through_messages():
    """With no host handler set, worker messages are buffered (none dropped) and read in order via messages()."""

    def setup(port):
        def on_message(e):
            for i in range(e.data):
                port.post_message(i)

        port.onmessage = on_message

    async with ThreadWorker(setup) as w:
        w.post_message(50)
        assert await take(w, 50) == list(range(50))


async def test_message_goes_to_handler_or_buffer_never_both():
    """A message dispatched while onmessage is set does not also appear in messages()."""
    got = asyncio.Event()
    handled: list[object] = []

    def on_message(e):
        handled.append(e.data)
        got.set()

    async with ThreadWorker(echo) as w:
        w.post_message("buffered")
        assert await take(w, 1) == ["buffered"]
        w.onmessage = on_message
        w.post_message("handled")
        await asyncio.wait_for(got.wait(), TIMEOUT)
    assert handled == ["handled"]
    assert await drain(w) == []


async def test_messages_buffered_are_kept_after_exit_and_iteration_ends():
    """Messages buffered before the worker exited are still readable and messages() then ends."""

    def setup(port):
        for i in range(3):
            port.post_message(i)

    w = ThreadWorker(setup)
    assert await asyncio.wait_for(w.terminate(), TIMEOUT) == 0
    assert await drain(w) == [0, 1, 2]


async def test_messages_iteration_ends_when_worker_exits():
    """An active `async for` over messages() finishes once the worker closes itself."""

    def setup(port):
        def on_message(e):
            port.post_message("last words")
            port.close()

        port.onmessage = on_message

    async with ThreadWorker(setup) as w:
        reader = asyncio.create_task(drain(w))
        w.post_message("bye")
        assert await asyncio.wait_for(reader, TIMEOUT) == ["last words"]
        assert await asyncio.wait_for(w.wait(), TIMEOUT) == 0


async def test_worker_side_messages_iterator_replaces_onmessage():
    """A worker may consume its inbox with `async for data in port.messages()` instead of onmessage."""

    async def life(port):
        async for data in port.messages():
            if data == "stop":
                return
            port.post_message(data * 2)

    async with ThreadWorker(life) as w:
        for i in range(5):
            w.post_message(i)
        w.post_message("stop")
        assert await asyncio.wait_for(w.wait(), TIMEOUT) == 0
        assert await drain(w) == [0, 2, 4, 6, 8]


async def test_worker_messages_reader_handles_every_message_posted_before_terminate():
    """terminate() lets a worker's messages() reader take, and finish, every message posted before it,
    even when its loop body awaits."""

    async def life(port):
        async for data in port.messages():
            await asyncio.sleep(0)
            port.post_message(data * 2)

    w = ThreadWorker(life)
    for i in range(10):
        w.post_message(i)
    assert await asyncio.wait_for(w.terminate(), TIMEOUT) == 0
    assert await drain(w) == [i * 2 for i in range(10)]
    assert w.statistics().discarded == 0


async def test_close_inside_a_messages_reader_finishes_its_current_message():
    """close() in a messages() reader's loop body lets that body finish; what is still queued is
    discarded and counted."""

    async def life(port):
        async for data in port.messages():
            if data == 2:
                port.close()
            await asyncio.sleep(0)
            port.post_message(data)

    w = ThreadWorker(life)
    for i in range(6):
        w.post_message(i)
    assert await asyncio.wait_for(w.wait(), TIMEOUT) == 0
    assert await drain(w) == [0, 1, 2]
    assert w.statistics().discarded == 3


@pytest.mark.parametrize("how", ["raises", "breaks"])
async def test_a_reader_that_stops_reading_does_not_hold_up_the_exit(how):
    """A messages() reader whose loop raised, or that broke out of its loop and went on awaiting, does not
    keep terminate() waiting."""

    async def life(port):
        async for _ in port.messages():
            await asyncio.sleep(0)
            if how == "raises":
                raise ValueError("the reader failed")
            break
        await asyncio.Event().wait()  # until cancelled at the exit

    w = ThreadWorker(life)
    w.onerror = lambda e: None
    for i in range(3):
        w.post_message(i)
    assert await asyncio.wait_for(w.terminate(), TIMEOUT) == (1 if how == "raises" else 0)
    assert w.statistics().discarded == 2


# -- request ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_request_returns_handler_return_value(kind):
    """request() returns what the worker's sync or async onmessage handler returned."""

    def setup(port):
        if kind == "sync":
            port.onmessage = lambda e: {"double": e.data * 2}
        else:

            async def on_message(e):
                await asyncio.sleep(0)
                return {"double": e.data * 2}

            port.onmessage = on_message

    async with ThreadWorker(setup) as w:
        assert await asyncio.wait_for(w.request(21), TIMEOUT) == {"double": 42}
        assert await asyncio.wait_for(w.request("ab"), TIMEOUT) == {"double": "abab"}
        stats = w.statistics()
        assert stats.requests == 2


@pytest.mark.parametrize("data", ["sync-key", "async:key"])
async def test_request_exception_reraised_with_type_and_worker_traceback(scripts, data):
    """A handler's exception is re-raised by request() with its type and a traceback naming the worker script."""
    errors: list[object] = []
    async with ThreadWorker(scripts / "msg_raiser.py") as w:
        w.onerror = errors.append
        with pytest.raises(LookupError, match="no such key") as info:
            await asyncio.wait_for(w.request(data), TIMEOUT)
        rendered = "".join(traceback.format_exception(info.value))
        assert "msg_raiser.py" in rendered
        assert "in fail" in rendered
        # The worker is unaffected: it keeps answering, no onerror, exit code stays 0.
        assert await asyncio.wait_for(w.request("ok"), TIMEOUT) == "fine"
    assert errors == []
    assert w.exit_code == 0


async def test_request_handler_raising_stop_iteration_gets_runtime_error_and_worker_goes_on():
    """StopIteration cannot travel in a future: the requester gets a RuntimeError caused by it (as asyncio
    does for coroutines), and the worker and the host go on."""

    def setup(port):
        def on_message(e):
            if e.data == "stop":
                raise StopIteration("no more")
            return e.data

        port.onmessage = on_message

    async with ThreadWorker(setup) as w:
        with pytest.raises(RuntimeError, match="StopIteration") as info:
            await asyncio.wait_for(w.request("stop"), TIMEOUT)
        assert isinstance(info.value.__cause__, StopIteration)
        assert await asyncio.wait_for(w.request("still here"), TIMEOUT) == "still here"
    assert w.exit_code == 0


@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_request_timeout_or_cancel_cancels_worker_handler(how):
    """A request's timeout (or cancelling its task) cancels the handler's task in the worker."""
    started = threading.Event()
    cancelled = threading.Event()

    def setup(port):
        async def on_message(e):
            if e.data == "ping":
                return "pong"
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        port.onmessage = on_message

    async with ThreadWorker(setup) as w:
        assert await asyncio.wait_for(w.request("ping"), TIMEOUT) == "pong"
        if how == "timeout":
            with pytest.raises(TimeoutError):
                await w.request("hang", timeout=0.2)
            assert started.is_set()
        else:
            task = asyncio.create_task(w.request("hang"))
            assert await wait_thread(started)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert await wait_thread(cancelled), "the worker-side handler task never saw CancelledError"
        # The worker goes on answering afterwards.
        assert await asyncio.wait_for(w.request("ping"), TIMEOUT) == "pong"
    assert w.exit_code == 0


@pytest.mark.parametrize("blocker", ["sync", "async"])
async def test_request_cancelled_before_handler_started_never_runs(blocker):
    """A request whose caller gave up while it was still queued is dropped: its handler never runs."""
    entered = threading.Event()
    gate = threading.Event()
    ran = threading.Event()

    def setup(port):
        def on_message(e):
            if e.data == "block":
                entered.set()
                if blocker == "sync":
                    gate.wait(TIMEOUT)
                    return "unblocked"

                async def wait_gate():
                    await asyncio.to_thread(gate.wait, TIMEOUT)
                    return "unblocked"

                return wait_gate()
            if e.data == "victim":
                ran.set()
                return "ran"
            return e.data

        port.onmessage = on_message

    async with ThreadWorker(setup) as w:
        blocked = asyncio.create_task(w.request("block"))
        assert await wait_thread(entered)
        with pytest.raises(TimeoutError):
            await w.request("victim", timeout=0.05)
        gate.set()
        assert await asyncio.wait_for(blocked, TIMEOUT) == "unblocked"
        # FIFO: once "probe" is answered, "victim" was either dropped or handled.
        assert await asyncio.wait_for(w.request("probe"), TIMEOUT) == "probe"
        assert not ran.is_set(), "the handler of a request cancelled before it started ran anyway"


async def test_a_request_cancelled_before_its_handler_started_is_dropped_however_soon_the_worker_takes_it():
    """A request whose awaiting task is cancelled while the worker is busy is dropped, even when the worker
    takes it before that task runs again (and sends its cancellation): its handler never runs."""
    gate, marker_handled, ran = threading.Event(), threading.Event(), threading.Event()

    def setup(port):
        def on_message(e):
            if e.data == "block":
                gate.wait(TIMEOUT)
            elif e.data == "marker":
                marker_handled.set()
            elif e.data == "victim":
                ran.set()
            return e.data

        port.onmessage = on_message

    async with ThreadWorker(setup) as w:
        w.post_message("block")
        victim = asyncio.create_task(w.request("victim"))
        w.post_message("marker")  # FIFO: taken after "victim"
        await asyncio.sleep(0)  # the task's first step: it awaits the answer
        victim.cancel()
        gate.set()
        # The host's thread blocks until the worker has taken "victim" and "marker": the cancelled task
        # cannot run again, and send its Cancel item, before that.
        assert marker_handled.wait(TIMEOUT)
        with pytest.raises(asyncio.CancelledError):
            await victim
        assert await asyncio.wait_for(w.request("probe"), TIMEOUT) == "probe"
    assert not ran.is_set(), "the handler of a request cancelled before it started ran anyway"


@pytest.mark.parametrize("how", ["task-cancelled-before-its-first-step", "never-awaited"])
async def test_a_request_given_up_before_it_was_awaited_is_dropped(how):
    """request() sends at once. A request whose task is cancelled before its first step, or whose
    coroutine is dropped unawaited (with a RuntimeWarning), is cancelled in the worker like any other:
    a handler that has not started never runs."""
    entered, gate, ran = threading.Event(), threading.Event(), threading.Event()

    def setup(port):
        def on_message(e):
            if e.data == "block":
                entered.set()
                gate.wait(TIMEOUT)
            elif e.data == "victim":
                ran.set()
            return e.data

        port.onmessage = on_message

    async with ThreadWorker(setup) as w:
        blocked = asyncio.create_task(w.request("block"))
        assert await wait_thread(entered)
        if how == "never-awaited":
            with pytest.warns(RuntimeWarning, match="never awaited"):
                w.request("victim")  # the coroutine is freed at once
        else:
            victim = asyncio.create_task(w.request("victim"))
            victim.cancel()
            with pytest.raises(asyncio.CancelledError):
                await victim
        assert w.statistics().pending_requests == 1  # "block" alone
        gate.set()
        assert await asyncio.wait_for(blocked, TIMEOUT) == "block"
        assert await asyncio.wait_for(w.request("probe"), TIMEOUT) == "probe"
        assert not ran.is_set(), "the handler of a request given up before it started ran anyway"


async def test_requests_never_awaited_warn_with_one_text_and_leave_one_registry_entry():
    """Every request dropped unawaited warns with the same text, as Python does for a coroutine never
    awaited: the warnings registry, which keeps each text shown for good, gets one entry, not one each."""
    async with ThreadWorker(answer) as w:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")  # Python's own action for RuntimeWarning: once per text
            for i in range(20):
                w.request(i)  # freed at once, never awaited
        assert await asyncio.wait_for(w.request("probe"), TIMEOUT) == "probe"
    texts = {str(warning.message) for warning in caught}
    assert texts == {"ThreadWorker.request() was never awaited: its request is cancelled"}
    registry = globals().get("__warningregistry__", {})
    assert len([key for key in registry if key != "version"]) == 1


async def test_a_request_is_a_coroutine_to_tasks_gather_and_anyio_task_groups():
    """What request() returns is taken as a coroutine by create_task, gather and anyio's start_soon
    (which calls request itself), and, like a native coroutine, refuses a second concurrent await."""
    entered, gate = threading.Event(), threading.Event()
    got: list[object] = []

    def setup(port):
        def on_message(e):
            if e.data == "block":
                entered.set()
                gate.wait(TIMEOUT)
            return e.data

        port.onmessage = on_message

    async def keep(answer):
        got.append(await answer)

    async with ThreadWorker(setup) as w:
        answer = w.request("block")
        first = asyncio.create_task(keep(answer))
        assert await wait_thread(entered)
        with pytest.raises(RuntimeError, match="awaited already"):
            await answer
        gate.set()
        await asyncio.wait_for(first, TIMEOUT)
        assert await asyncio.wait_for(asyncio.gather(w.request(1), w.request(2)), TIMEOUT) == [1, 2]
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(w.request, "fire and forget")
                tg.start_soon(keep, w.request("kept"))
    assert got == ["block", "kept"]
    assert w.statistics().pending_requests == 0


async def test_requests_are_sent_at_once_in_order_with_posts_and_before_terminate():
    """request() sends at once, in order with post_message: a request made before a post is handled
    first though its coroutine is awaited later, and requests whose tasks have not run yet when
    terminate() is called are still answered, as messages posted before it are."""
    seen: list[object] = []

    def setup(port):
        def on_message(e):
            seen.append(e.data)
            return e.data

        port.onmessage = on_message

    w = ThreadWorker(setup)
    first = w.request("first")  # not awaited yet
    w.post_message("second")
    answers = [asyncio.create_task(w.request(i)) for i in range(3)]
    assert await asyncio.wait_for(w.terminate(), TIMEOUT) == 0
    assert await first == "first"
    assert [await answer for answer in answers] == [0, 1, 2]
    assert seen == ["first", "second", 0, 1, 2]


@pytest.mark.parametrize("loop_factory", [None, "uvloop"], ids=["asyncio-worker", "uvloop-worker"])
async def test_reply_does_not_wait_for_the_next_handler(loop_factory):
    """A request's answer reaches the host while the worker is still busy with the message after it."""
    parked, unpark, unblock = threading.Event(), threading.Event(), threading.Event()

    def setup(port):
        def on_message(e):
            if e.data == "park":
                parked.set()
                unpark.wait(TIMEOUT)
            elif e.data == "block":
                unblock.wait(3 * TIMEOUT)  # longer than the host waits for the answer
            return e.data

        port.onmessage = on_message

    async with ThreadWorker(setup, loop_factory=loop_factory) as w:
        try:
            await w.post_message("park")
            assert await wait_thread(parked)
            # Both wait behind "park", so the worker takes them in one run of its inbox.
            answer = asyncio.create_task(w.request("answer"))
            await asyncio.sleep(0)  # one loop turn: the request's task puts it in the inbox
            await w.post_message("block")
            unpark.set()
            assert await asyncio.wait_for(answer, TIMEOUT) == "answer"  # "block" still holds the worker
        finally:
            unpark.set()
            unblock.set()


async def test_request_without_onmessage_raises_worker_error():
    """request() to a worker with no onmessage handler fails with a WorkerError that says so."""
    async with ThreadWorker(lambda port: None) as w:
        with pytest.raises(WorkerError, match="onmessage"):
            await asyncio.wait_for(w.request("anyone?"), TIMEOUT)
    assert w.exit_code == 0


# -- statistics ---------------------------------------------------------------------------------


async def test_statistics_counts_messages_requests_and_depths():
    """statistics() counts sent/received messages, requests and both inbox depths."""
    entered = threading.Event()
    gate = threading.Event()

    def setup(port):
        def on_message(e):
            if e.data == "block":
                entered.set()
                gate.wait(TIMEOUT)
            elif e.data == "burst":
                for i in range(3):
                    port.post_message(i)
            return "answer"

        port.onmessage = on_message

    async with ThreadWorker(setup) as w:
        stats = w.statistics()
        assert (stats.messages_sent, stats.messages_received, stats.requests) == (0, 0, 0)

        # Worker inbox depth: messages posted and not yet handled.
        w.post_message("block")
        assert await wait_thread(entered)
        w.post_message("x")
        w.post_message("y")
        assert w.statistics().inbox_depth == 3
        gate.set()

        # A request's reply comes after the 3 messages its handler posted, so they are all here now.
        assert await asyncio.wait_for(w.request("burst"), TIMEOUT) == "answer"
        stats = w.statistics()
        assert stats.host_inbox_depth == 3
        assert stats.inbox_depth == 0
        assert stats.messages_sent == 4  # 3 messages + 1 request
        assert stats.requests == 1
        assert stats.messages_received == 4  # 3 messages + 1 reply
        assert stats.state is WorkerState.RUNNING

        assert await take(w, 1) == [0]
        assert w.statistics().host_inbox_depth == 2
        assert await take(w, 2) == [1, 2]
        assert w.statistics().host_inbox_depth == 0


async def test_terminate_does_not_wait_for_a_worker_held_up_by_backpressure():
    """A worker handler awaiting its post_message against a full host inbox that nobody reads does not
    hold terminate() up: once terminating, the worker's posts no longer wait, and none is lost."""

    waiting = threading.Event()

    def setup(port):
        async def on_message(e):
            for k in range(50):
                posted = port.post_message(k)
                if not posted.done():
                    waiting.set()  # held up: the host inbox is over max_inbox and nobody reads it
                await posted

        port.onmessage = on_message

    w = ThreadWorker(setup, max_inbox=2)
    w.post_message("go")
    assert await wait_thread(waiting)
    assert await asyncio.wait_for(w.terminate(), TIMEOUT) == 0
    assert [m async for m in w.messages()] == list(range(50))


@pytest.mark.parametrize("producer", ["life", "task"])
async def test_a_producer_held_up_by_backpressure_is_cancelled_at_terminate_without_flooding(producer):
    """A task in the worker that posts in a loop, held up by a full host inbox that nobody reads, is
    cancelled by terminate() even when the exit first waits for something else (here, a message buffered
    for a messages() reader that never comes): once terminating, its posts no longer wait for the host,
    but each still yields to the worker's loop, so it cannot run on and flood the host's inbox."""
    waiting = threading.Event()
    cancelled = threading.Event()

    def setup(port):
        async def produce():
            n = 0
            try:
                while True:
                    posted = port.post_message(n)
                    if not posted.done():
                        waiting.set()
                    await posted
                    n += 1
            except asyncio.CancelledError:
                cancelled.set()
                raise

        if producer == "task":
            asyncio.get_running_loop().create_task(produce())
            return None
        return produce()

    w = ThreadWorker(setup, max_inbox=8)
    w.post_message("buffered")  # no onmessage in the worker: it waits in the buffer that messages() reads
    assert await wait_thread(waiting)
    assert await asyncio.wait_for(w.terminate(), TIMEOUT) == 0
    assert cancelled.is_set()
    received = [m async for m in w.messages()]
    assert received == list(range(len(received)))  # in order, none lost
    assert len(received) < 100
