"""Worker lifecycle: states, terminate/close, exit codes, crashes and what works after termination."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import threading
import weakref

import pytest
from support import drain, failing, wait_thread

from arkworker import (
    Event,
    SerializationError,
    ThreadWorker,
    WorkerCrashedError,
    WorkerError,
    WorkerNotRunningError,
    WorkerState,
    WorkerStatistics,
)

TIMEOUT = 5


def echo(port):
    """Worker callable: answer requests with the data and post every message back."""

    def on_message(e):
        port.post_message(e.data)
        return e.data

    port.onmessage = on_message


# -- states -------------------------------------------------------------------------------------


async def test_states_progress_starting_running_terminating_terminated():
    """w.state goes STARTING -> RUNNING -> TERMINATING -> TERMINATED and is RUNNING when the first message is dispatched."""
    entered = threading.Event()
    gate = threading.Event()
    seen_at_dispatch: list[WorkerState] = []
    got = asyncio.Event()

    def setup(port):
        entered.set()
        gate.wait(TIMEOUT)
        port.post_message("ready")

    def on_message(e):
        seen_at_dispatch.append(w.state)
        got.set()

    w = ThreadWorker(setup)
    try:
        assert w.state is WorkerState.STARTING
        assert isinstance(w.state, WorkerState)
        w.onmessage = on_message
        assert await wait_thread(entered)
        assert w.state is WorkerState.STARTING  # top level still running
        gate.set()
        await asyncio.wait_for(got.wait(), TIMEOUT)
        assert seen_at_dispatch == [WorkerState.RUNNING]
        assert w.state is WorkerState.RUNNING
        exiting = w.terminate()
        assert w.state is WorkerState.TERMINATING
    finally:
        gate.set()
        code = await asyncio.wait_for(w.terminate(), TIMEOUT)
    assert code == 0
    assert w.state is WorkerState.TERMINATED
    assert await exiting == 0
    assert w.statistics().state is WorkerState.TERMINATED


async def test_a_script_that_closes_itself_at_top_level_still_reaches_running_first():
    """A top level that posts and then calls close() ran without failing: the host sees RUNNING before it
    dispatches those posts, then TERMINATING, and the exit code is 0."""
    seen_at_dispatch: list[tuple[object, WorkerState]] = []

    def script(port):
        port.post_message("first")
        port.post_message("second")
        port.close()

    w = ThreadWorker(script)
    w.onmessage = lambda e: seen_at_dispatch.append((e.data, w.state))
    assert await asyncio.wait_for(w.wait(), TIMEOUT) == 0
    assert seen_at_dispatch == [("first", WorkerState.RUNNING), ("second", WorkerState.RUNNING)]


async def test_an_error_during_the_top_level_reaches_the_host_after_running_in_order_with_the_posts():
    """A worker error raised while the top level runs (its onmessageerror fails; the top level goes on)
    reaches the host after RUNNING and in order with the posts around it."""
    seen: list[tuple[object, WorkerState]] = []

    def script(port):
        port.post_message("before")

        def fail(e):
            raise RuntimeError("onmessageerror failed")

        port.onmessageerror = fail
        with contextlib.suppress(SerializationError):
            port.post_message(lambda: 0)  # cannot be copied: onmessageerror runs, and raises
        port.post_message("after")
        port.onmessage = lambda e: e.data

    w = ThreadWorker(script)
    w.onallerrors = lambda e: seen.append((e.message, w.state))
    w.onmessage = lambda e: seen.append((e.data, w.state))
    assert await asyncio.wait_for(w.request("sync"), TIMEOUT) == "sync"
    assert await asyncio.wait_for(w.terminate(), TIMEOUT) == 1
    running = WorkerState.RUNNING
    assert seen == [
        ("before", running),
        ("RuntimeError: onmessageerror failed", running),
        ("after", running),
    ]


async def test_a_life_coroutine_returned_after_close_at_top_level_never_starts_and_is_closed():
    """A callable script that closes itself and returns a coroutine: the life never starts, and the
    coroutine is closed, not left to warn that it was never awaited."""
    lives: list = []
    started = []

    def script(port):
        async def life():
            started.append(True)

        port.close()
        lives.append(life())
        return lives[0]

    w = ThreadWorker(script)
    assert await asyncio.wait_for(w.wait(), TIMEOUT) == 0
    assert started == []
    assert inspect.getcoroutinestate(lives[0]) == inspect.CORO_CLOSED


async def test_leaving_async_with_in_a_cancelled_anyio_scope_still_awaits_the_exit():
    """anyio's cancel scopes cancel every await inside them, the exit's too: leaving `async with` in a
    cancelled scope still waits until the worker has ended, and a worker error that came meanwhile goes to
    the loop's exception handler (the block's cancellation is what propagates)."""
    anyio = pytest.importorskip("anyio")
    reported: list[BaseException] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda loop, context: reported.append(context["exception"])
    )
    started = threading.Event()

    def script(port):
        async def on_message(e):
            started.set()
            await asyncio.sleep(0.05)  # still running when terminate() comes: SPEC lets it finish
            raise RuntimeError("late error")

        port.onmessage = on_message

    with anyio.CancelScope() as scope:
        async with ThreadWorker(script) as w:
            await w.post_message("go")
            assert await wait_thread(started)
            scope.cancel()
            await anyio.sleep(TIMEOUT)
    assert scope.cancelled_caught
    assert w.state is WorkerState.TERMINATED
    assert await asyncio.wait_for(w.wait(), TIMEOUT) == 1
    assert [str(exc) for exc in reported] == ["late error"]


async def test_terminate_without_await_then_wait():
    """terminate() may be called without awaiting; wait() then gives the exit code after the worker ended."""
    w = ThreadWorker(echo)
    result = w.terminate()
    assert inspect.isawaitable(result)
    assert await asyncio.wait_for(w.wait(), TIMEOUT) == 0
    assert w.exit_code == 0
    assert w.state is WorkerState.TERMINATED


async def test_repeated_terminate_is_harmless():
    """Calling terminate() several times, before and after exit, never raises and always gives the exit code."""
    w = ThreadWorker(echo)
    first = w.terminate()
    second = w.terminate()
    assert await asyncio.wait_for(first, TIMEOUT) == 0
    assert await asyncio.wait_for(second, TIMEOUT) == 0
    assert await asyncio.wait_for(w.terminate(), TIMEOUT) == 0
    assert await asyncio.wait_for(w.wait(), TIMEOUT) == 0


async def test_terminate_drains_queued_input_and_delivers_worker_posts():
    """Every message posted before terminate() is handled, and what the worker posts while draining is delivered."""
    entered = threading.Event()
    gate = threading.Event()
    handled: list[int] = []
    delivered: list[object] = []

    def setup(port):
        def on_message(e):
            if e.data == 0:
                entered.set()
                gate.wait(TIMEOUT)
            handled.append(e.data)
            port.post_message(("done", e.data))

        port.onmessage = on_message

    w = ThreadWorker(setup)
    w.onmessage = lambda e: delivered.append(e.data)
    w.post_message(0)
    assert await wait_thread(entered)
    for i in range(1, 50):
        w.post_message(i)
    exiting = w.terminate()
    gate.set()
    assert await asyncio.wait_for(exiting, TIMEOUT) == 0
    assert handled == list(range(50))
    assert delivered == [("done", i) for i in range(50)]
    assert w.statistics().discarded == 0


def _post_later(port, data):
    asyncio.get_running_loop().call_soon(port.post_message, ("later", data))


def _post_two_callbacks_later(port, data):
    asyncio.get_running_loop().call_soon(_post_later, port, data)


def _post_from_a_future_callback(port, data):
    future = asyncio.get_running_loop().create_future()
    future.add_done_callback(lambda f: port.post_message(("later", f.result())))
    asyncio.get_running_loop().call_soon(future.set_result, data)


@pytest.mark.parametrize("loop_factory", [None, "uvloop"])
@pytest.mark.parametrize("schedule", [_post_later, _post_two_callbacks_later, _post_from_a_future_callback])
async def test_callbacks_the_last_handler_schedules_still_run_before_the_exit(loop_factory, schedule):
    """A handler that schedules a callback on the worker's loop (or a callback that schedules another, or a
    future's done callback), followed at once by the terminate item: they run before the loop stops, and
    what they post reaches the host."""
    delivered: list[object] = []

    def setup(port):
        port.onmessage = lambda e: schedule(port, e.data)

    w = ThreadWorker(setup, loop_factory=loop_factory)
    w.onmessage = lambda e: delivered.append(e.data)
    for i in range(3):
        w.post_message(i)
    assert await asyncio.wait_for(w.terminate(), TIMEOUT) == 0
    assert delivered == [("later", i) for i in range(3)]


async def test_worker_close_discards_queued_input_and_reports_count():
    """Worker-side close() stops after the current handler; queued input is discarded and counted in statistics().discarded."""
    entered = threading.Event()
    gate = threading.Event()
    handled: list[object] = []

    def setup(port):
        def on_message(e):
            handled.append(e.data)
            if e.data == "close":
                entered.set()
                gate.wait(TIMEOUT)
                port.close()
                port.close()  # repeated close is harmless

        port.onmessage = on_message

    w = ThreadWorker(setup)
    w.post_message("close")
    assert await wait_thread(entered)
    for i in range(5):
        w.post_message(i)
    gate.set()
    assert await asyncio.wait_for(w.wait(), TIMEOUT) == 0
    assert handled == ["close"]
    assert w.statistics().discarded == 5
    assert w.state is WorkerState.TERMINATED


# -- exit codes and crashes ---------------------------------------------------------------------


async def test_exit_code_zero_normally():
    """A worker that had no error exits with code 0."""
    async with ThreadWorker(echo) as w:
        assert await asyncio.wait_for(w.request("x"), TIMEOUT) == "x"
    assert w.exit_code == 0
    assert await w.wait() == 0


async def test_exit_code_sticky_one_after_error_even_when_onallerrors_keeps_worker_alive():
    """After a worker error handled by onallerrors the worker keeps running, but its exit code is 1."""
    seen = asyncio.Event()
    async with ThreadWorker(failing) as w:
        w.onallerrors = lambda event: seen.set()
        w.post_message("boom")
        await asyncio.wait_for(seen.wait(), TIMEOUT)
        assert await asyncio.wait_for(w.request("ping"), TIMEOUT) == "pong"
        assert w.state is WorkerState.RUNNING
        assert w.exit_code is None
        assert w.statistics().errors == 1
    assert w.exit_code == 1
    assert await w.wait() == 1


async def test_exit_code_one_after_worker_side_message_error():
    """A message error in the worker (an uncopyable post) makes the exit code 1 although the worker keeps running."""

    def setup(port):
        def on_message(e):
            with contextlib.suppress(WorkerError):
                port.post_message(lambda: None)
            return "survived"

        port.onmessage = on_message

    async with ThreadWorker(setup) as w:
        assert await asyncio.wait_for(w.request("x"), TIMEOUT) == "survived"
    assert w.exit_code == 1


async def test_async_with_raises_worker_crashed_error_for_unhandled_error():
    """Leaving `async with` after an unhandled worker error raises WorkerCrashedError caused by the original exception."""
    with pytest.raises(WorkerCrashedError) as info:
        async with ThreadWorker(failing) as w:
            w.post_message("boom")
            assert await asyncio.wait_for(w.wait(), TIMEOUT) == 1
    cause = info.value.__cause__
    assert isinstance(cause, ValueError)
    assert str(cause) == "bad input"
    assert w.state is WorkerState.TERMINATED


async def test_async_with_no_crash_error_when_onerror_set():
    """With an onerror handler set, leaving `async with` after a worker error raises nothing; exit code is 1."""
    seen: list[object] = []
    async with ThreadWorker(failing) as w:
        w.onerror = seen.append
        w.post_message("boom")
        assert await asyncio.wait_for(w.wait(), TIMEOUT) == 1
    assert len(seen) == 1
    assert isinstance(seen[0].error, ValueError)


async def test_unhandled_errors_after_the_first_in_async_with_go_to_loop_handler(loop_errors):
    """In `async with`, the first unhandled worker error is raised as the block is left; the errors the
    worker meets after it (messages posted before its exit still run) reach the loop's exception
    handler, in order: none is only counted."""
    with pytest.raises(WorkerCrashedError) as info:
        async with ThreadWorker(raises_its_message) as w:
            for n in range(3):
                w.post_message(n)
            assert await asyncio.wait_for(w.wait(), TIMEOUT) == 1
    assert str(info.value.__cause__) == "boom 0"
    assert [str(exc) for exc in loop_errors.exceptions] == ["boom 1", "boom 2"]  # boom 0 is raised only
    assert w.statistics().errors == 3


def raises_its_message(port):
    def on_message(e):
        raise ValueError(f"boom {e.data}")

    port.onmessage = on_message


async def test_unhandled_error_without_async_with_goes_to_loop_handler(loop_errors):
    """Without `async with`, an unhandled worker error goes to the loop's exception handler and wait() returns 1."""
    w = ThreadWorker(failing)
    w.post_message("boom")
    assert await asyncio.wait_for(w.wait(), TIMEOUT) == 1
    errors = [exc for exc in loop_errors.exceptions if isinstance(exc, ValueError)]
    assert len(errors) == 1
    assert str(errors[0]) == "bad input"
    assert w.state is WorkerState.TERMINATED


async def test_pending_requests_settle_with_typed_error_when_worker_closes():
    """Requests still queued when the worker closes itself fail with WorkerNotRunningError instead of hanging."""
    entered = threading.Event()
    gate = threading.Event()
    ran: list[object] = []

    def setup(port):
        def on_message(e):
            ran.append(e.data)
            if e.data == "close":
                entered.set()
                gate.wait(TIMEOUT)
                port.close()
                return "closing"
            return "answered"

        port.onmessage = on_message

    w = ThreadWorker(setup)
    first = asyncio.create_task(w.request("close"))
    second = asyncio.create_task(w.request("queued"))
    third = asyncio.create_task(w.request("also queued"))
    assert await wait_thread(entered)
    assert w.statistics().requests == 3
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, second, third, return_exceptions=True), TIMEOUT)
    assert results[0] == "closing"
    assert isinstance(results[1], WorkerNotRunningError)
    assert isinstance(results[2], WorkerNotRunningError)
    assert ran == ["close"]
    assert await asyncio.wait_for(w.wait(), TIMEOUT) == 0
    assert w.statistics().pending_requests == 0


# -- after terminate ----------------------------------------------------------------------------

AFTER_TERMINATE_CALLS = {
    "post_message": lambda w: w.post_message("x"),
    "post_message_with_shared_sendable": lambda w: w.post_message_with_shared_sendable("x"),
    "register_global_call_object": lambda w: w.register_global_call_object("obj", object()),
}


@pytest.mark.parametrize("when", ["terminating", "terminated"])
@pytest.mark.parametrize("call", list(AFTER_TERMINATE_CALLS))
async def test_sending_after_terminate_raises_worker_not_running(call, when):
    """After terminate(), post_message*, register_global_call_object raise WorkerNotRunningError (10200004)."""
    w = ThreadWorker(echo)
    exiting = w.terminate()
    if when == "terminated":
        await asyncio.wait_for(exiting, TIMEOUT)
    try:
        with pytest.raises(WorkerNotRunningError) as info:
            AFTER_TERMINATE_CALLS[call](w)
        assert info.value.code == 10200004
    finally:
        await asyncio.wait_for(exiting, TIMEOUT)


@pytest.mark.parametrize("when", ["terminating", "terminated"])
async def test_request_after_terminate_raises_worker_not_running(when):
    """After terminate(), request() raises WorkerNotRunningError (10200004)."""
    w = ThreadWorker(echo)
    exiting = w.terminate()
    if when == "terminated":
        await asyncio.wait_for(exiting, TIMEOUT)
    try:
        with pytest.raises(WorkerNotRunningError) as info:
            await asyncio.wait_for(w.request("x"), TIMEOUT)
        assert info.value.code == 10200004
    finally:
        await asyncio.wait_for(exiting, TIMEOUT)


LISTENER_CALLS = {
    "on": lambda w: w.on("message", print),
    "once": lambda w: w.once("message", print),
    "off": lambda w: w.off("message", print),
    "add_event_listener": lambda w: w.add_event_listener("message", print),
    "remove_event_listener": lambda w: w.remove_event_listener("message"),
    "remove_all_listener": lambda w: w.remove_all_listener(),
    "dispatch_event": lambda w: w.dispatch_event(Event("custom")),
    "unregister_global_call_object": lambda w: w.unregister_global_call_object(),
}


@pytest.mark.parametrize("call", list(LISTENER_CALLS))
async def test_listener_methods_raise_once_terminated(call):
    """Once TERMINATED the listener methods raise WorkerNotRunningError; while TERMINATING they still work."""
    w = ThreadWorker(echo)
    exiting = w.terminate()
    assert w.state is WorkerState.TERMINATING
    LISTENER_CALLS[call](w)  # still allowed while terminating
    assert await asyncio.wait_for(exiting, TIMEOUT) == 0
    with pytest.raises(WorkerNotRunningError) as info:
        LISTENER_CALLS[call](w)
    assert info.value.code == 10200004


async def test_terminated_worker_still_answers_state_queries():
    """Once TERMINATED, terminate(), wait(), exit_code, state, statistics() work and messages() simply ends."""
    w = ThreadWorker(echo)
    assert await asyncio.wait_for(w.terminate(), TIMEOUT) == 0
    assert await asyncio.wait_for(w.terminate(), TIMEOUT) == 0
    assert await asyncio.wait_for(w.wait(), TIMEOUT) == 0
    assert w.exit_code == 0
    assert w.state is WorkerState.TERMINATED
    stats = w.statistics()
    assert isinstance(stats, WorkerStatistics)
    assert stats.state is WorkerState.TERMINATED
    assert await drain(w) == []


async def test_worker_thread_gone_after_terminate():
    """After `await w.terminate()` the worker's thread `arkworker-<name>` has ended."""
    threads: list[threading.Thread] = []

    def setup(port):
        threads.append(threading.current_thread())
        port.onmessage = lambda e: e.data

    w = ThreadWorker(setup, name="lc-gone")
    try:
        assert await asyncio.wait_for(w.request("up?"), TIMEOUT) == "up?"
        assert [t.name for t in threads] == ["arkworker-lc-gone"]
        assert threads[0].is_alive()
        assert threads[0] in threading.enumerate()
    finally:
        assert await asyncio.wait_for(w.terminate(), TIMEOUT) == 0
    assert not threads[0].is_alive()
    assert not [t for t in threading.enumerate() if t.name == "arkworker-lc-gone"]


# -- exceptions in onerror / onexit -------------------------------------------------------------


async def test_exception_in_host_onerror_goes_to_loop_handler(loop_errors):
    """An exception raised in a host onerror goes to the loop's exception handler and the worker still exits with 1."""
    boom = RuntimeError("onerror failed")

    def on_error(event):
        raise boom

    w = ThreadWorker(failing)
    w.onerror = on_error
    w.post_message("boom")
    assert await asyncio.wait_for(w.wait(), TIMEOUT) == 1
    assert boom in loop_errors.exceptions
    # The worker error itself was handled (onerror was set), so it is not reported as unhandled.
    assert not [exc for exc in loop_errors.exceptions if isinstance(exc, ValueError)]


@pytest.mark.parametrize(("trigger_error", "expected"), [(False, 0), (True, 1)])
async def test_exception_in_host_onexit_goes_to_loop_handler(loop_errors, trigger_error, expected):
    """An exception raised in a host onexit goes to the loop's exception handler and the exit code is unchanged."""
    boom = RuntimeError("onexit failed")

    def on_exit(code):
        raise boom

    w = ThreadWorker(failing)
    w.onexit = on_exit
    w.onerror = lambda event: None
    if trigger_error:
        w.post_message("boom")
        assert await asyncio.wait_for(w.wait(), TIMEOUT) == expected
    assert await asyncio.wait_for(w.terminate(), TIMEOUT) == expected
    assert w.exit_code == expected
    assert loop_errors.exceptions == [boom]


# -- callable scripts ---------------------------------------------------------------------------


async def test_callable_coroutine_return_closes_worker_with_zero():
    """A callable script whose coroutine returns closes the worker with exit code 0; what it posted is delivered."""

    async def life(port):
        port.post_message("alive")
        await asyncio.sleep(0)
        port.post_message("done")

    w = ThreadWorker(life)
    assert await asyncio.wait_for(w.wait(), TIMEOUT) == 0
    assert w.state is WorkerState.TERMINATED
    assert await drain(w) == ["alive", "done"]


def handlers_set_in_a_coroutine_life(port):
    """A callable script whose life, a coroutine, sets the handler in its first step."""

    async def life():
        port.onmessage = lambda e: ("got", e.data)
        await asyncio.Event().wait()  # until the worker's exit cancels it

    return life()


def handlers_set_in_a_top_level_task(port):
    """A callable script whose top level starts a task that sets the handler in its first step."""

    async def set_up():
        port.onmessage = lambda e: ("got", e.data)

    asyncio.get_running_loop().create_task(set_up())


@pytest.mark.parametrize("script", [handlers_set_in_a_coroutine_life, handlers_set_in_a_top_level_task])
async def test_handlers_set_in_the_first_step_of_a_task_get_the_first_messages(script):
    """Tasks the top level started (a coroutine life among them) take their first step before the first
    message is dispatched: the handler one of them sets gets what was posted right after construction."""
    async with ThreadWorker(script) as w:
        w.post_message("posted")
        assert await asyncio.wait_for(w.request("asked"), TIMEOUT) == ("got", "asked")
    stats = w.statistics()
    assert (stats.discarded, stats.inbox_depth) == (0, 0)  # "posted" was handled, not buffered for messages()


async def test_callable_coroutine_exception_takes_error_path():
    """A callable script whose coroutine raises reaches onerror with that exception and exits with code 1."""
    seen: list[object] = []

    async def life(port):
        await asyncio.sleep(0)
        raise KeyError("life failed")

    w = ThreadWorker(life)
    w.onerror = seen.append
    assert await asyncio.wait_for(w.wait(), TIMEOUT) == 1
    assert len(seen) == 1
    assert isinstance(seen[0].error, KeyError)


async def test_callable_coroutine_exception_unhandled_crashes_async_with():
    """An unhandled exception from a callable script's coroutine makes `async with` raise WorkerCrashedError."""

    async def life(port):
        raise KeyError("life failed")

    with pytest.raises(WorkerCrashedError) as info:
        async with ThreadWorker(life) as w:
            assert await asyncio.wait_for(w.wait(), TIMEOUT) == 1
    assert isinstance(info.value.__cause__, KeyError)


HANDED_TO_A_TASK = {  # what is waited for, how, and what the wait gives
    "wait_for(wait())": ("exit", lambda w: asyncio.wait_for(w.wait(), TIMEOUT), 0),
    "gather(wait())": ("exit", lambda w: asyncio.gather(w.wait()), [0]),
    "create_task(wait())": ("exit", lambda w: asyncio.create_task(w.wait()), 0),
    "wait_for(request())": ("answer", lambda w: asyncio.wait_for(w.request("ping"), TIMEOUT), "ping"),
    "create_task(request())": ("answer", lambda w: asyncio.create_task(w.request("ping")), "ping"),
}


@pytest.mark.parametrize(("what", "wait", "expected"), HANDED_TO_A_TASK.values(), ids=HANDED_TO_A_TASK.keys())
async def test_an_async_host_callback_may_hand_the_wait_for_its_own_worker_to_another_task(
    what, wait, expected
):
    """An async host callback that waits for its own worker's exit or answer through another task
    (wait_for, gather, create_task wrap the coroutine in one) does not wait for itself: the answer or the
    exit comes, though it is queued behind the callback."""
    got: list[object] = []

    def script(port):
        port.post_message("first")
        port.onmessage = lambda e: port.close() if e.data == "close" else e.data

    w = ThreadWorker(script)
    finished = asyncio.Event()

    async def on_message(e):
        if what == "exit":
            w.post_message("close")  # the worker closes itself: its exit is queued behind this callback
        got.append(await wait(w))
        finished.set()

    w.onmessage = on_message
    await asyncio.wait_for(finished.wait(), TIMEOUT)
    assert got == [expected]
    await asyncio.wait_for(w.terminate(), TIMEOUT)


EXIT_AWAITED_BY = {
    "onexit: wait()": ("onexit", lambda w: w.wait()),
    "onexit: terminate()": ("onexit", lambda w: w.terminate()),
    "onexit: wait_for(wait())": ("onexit", lambda w: asyncio.wait_for(w.wait(), TIMEOUT)),
    "exit listener: wait()": ("listener", lambda w: w.wait()),
}


@pytest.mark.parametrize("crash", [False, True], ids=["clean", "after-async-onerror"])
@pytest.mark.parametrize(("where", "wait"), EXIT_AWAITED_BY.values(), ids=EXIT_AWAITED_BY.keys())
async def test_an_async_exit_callback_that_awaits_its_own_workers_exit_gets_the_code(where, wait, crash):
    """An async onexit or "exit" listener that awaits its own worker's exit (wait() or terminate()) gets
    the exit code at once instead of waiting for itself; the host's terminate() and later wait() return
    once it has finished, also when an async onerror of the worker's crash was still running."""
    steps: list[object] = []

    def script(port):
        def on_message(e):
            raise RuntimeError("crash")

        port.onmessage = on_message

    w = ThreadWorker(script)
    if crash:

        async def on_error(event):
            await asyncio.sleep(0)
            steps.append("onerror")

        w.onerror = on_error

    async def on_exit(code):
        steps.append(("exit callback got", await wait(w)))

    if where == "onexit":
        w.onexit = on_exit
    else:
        w.on("exit", on_exit)
    if crash:
        w.post_message("crash")
        code = await asyncio.wait_for(w.wait(), TIMEOUT)
    else:
        code = await asyncio.wait_for(w.terminate(), TIMEOUT)
    assert code == (1 if crash else 0)
    assert ("exit callback got", code) in steps  # it had finished when the outer wait returned
    assert await asyncio.wait_for(w.wait(), TIMEOUT) == code
    assert await asyncio.wait_for(w.terminate(), TIMEOUT) == code


async def test_an_async_host_callback_may_await_an_exit_future_made_before_it_ran():
    """The future of terminate(), made by the host's task before any callback ran, may be awaited by an async
    onmessage (the exit is queued behind it) and by an async onexit (the exit settles after it): both get
    the code, and so does the host."""
    got: list[tuple[str, int]] = []
    w = ThreadWorker(lambda port: port.post_message("hi"))
    exit_future = w.terminate()

    async def on_message(e):
        got.append(("onmessage", await exit_future))

    async def on_exit(code):
        got.append(("onexit", await exit_future))

    w.onmessage = on_message
    w.onexit = on_exit
    assert await asyncio.wait_for(asyncio.shield(exit_future), TIMEOUT) == 0
    assert await asyncio.wait_for(w.wait(), TIMEOUT) == 0
    assert sorted(got) == [("onexit", 0), ("onmessage", 0)]


async def test_an_exit_future_cancelled_by_a_timeout_stays_cancelled_for_an_exit_callback():
    """A terminate() future cancelled by a timeout, then awaited by an async onexit, gives that callback a
    CancelledError, as any cancelled future does; nothing else goes wrong and the exit settles."""
    gate = threading.Event()

    def script(port):
        port.onmessage = lambda e: gate.wait(TIMEOUT)

    w = ThreadWorker(script)
    w.post_message("hold the exit")
    exit_future = w.terminate()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(exit_future, 0.01)
    got: list[object] = []

    async def on_exit(code):
        got.append(await asyncio.gather(exit_future, return_exceptions=True))

    w.onexit = on_exit
    loop_errors: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: loop_errors.append(context))
    gate.set()
    assert await asyncio.wait_for(w.wait(), TIMEOUT) == 0
    assert len(got) == 1
    assert isinstance(got[0][0], asyncio.CancelledError)
    assert loop_errors == []


@pytest.mark.parametrize("how", ["terminate", "worker-closes"])
async def test_awaiting_the_exit_inside_an_async_host_callback_returns(how):
    """An async host callback of a worker may await that worker's exit (terminate() or wait()): the
    exit is settled even though the callback itself still holds the delivery of what the worker sent,
    whether the exit was queued before the callback began or came while it ran."""
    codes: list[int] = []
    exits: list[int] = []

    def setup(port):
        port.onmessage = lambda e: (port.post_message("done"), port.close())

    w = (
        ThreadWorker(setup)
        if how == "worker-closes"
        else ThreadWorker(lambda port: port.post_message("done"))
    )
    w.onexit = exits.append
    finished = asyncio.Event()

    async def on_message(e):
        codes.append(await (w.wait() if how == "worker-closes" else w.terminate()))
        finished.set()

    w.onmessage = on_message
    if how == "worker-closes":
        w.post_message("go")
    await asyncio.wait_for(finished.wait(), TIMEOUT)
    assert codes == [0]
    assert exits == [0]
    assert w.state is WorkerState.TERMINATED


@pytest.mark.parametrize("loop_factory", [None, "uvloop"])
async def test_an_ended_worker_is_freed_without_the_garbage_collector(loop_factory):
    """Once a worker has exited, dropping its handle frees the handle and the worker's port at once, even though the script's handlers close over the port: starting many workers leaves no garbage cycles for the collector."""
    ports: list[weakref.ref[object]] = []

    def script(port):
        ports.append(weakref.ref(port))
        port.on("message", lambda e: port.post_message(e.data))  # closes over the port, as scripts do
        echo(port)

    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        w = ThreadWorker(script, loop_factory=loop_factory)
        assert await asyncio.wait_for(w.request("hi"), TIMEOUT) == "hi"
        assert await asyncio.wait_for(w.terminate(), TIMEOUT) == 0
        handle = weakref.ref(w)
        del w
        assert handle() is None, gc.get_referrers(handle())
        assert ports[0]() is None
    finally:
        if was_enabled:
            gc.enable()


async def test_terminate_returns_after_the_async_host_callbacks_of_earlier_messages_finished():
    """`await w.terminate()` returns only once the async host callback of every message the worker posted
    has finished, and onexit runs after the last of them."""
    log: list[object] = []

    async def on_message(e):
        log.append(("start", e.data))
        await asyncio.sleep(0)  # the callback really suspends
        log.append(("end", e.data))

    w = ThreadWorker(lambda port: [port.post_message(k) for k in range(3)])
    w.onmessage = on_message
    w.onexit = lambda code: log.append(("exit", code))
    assert await asyncio.wait_for(w.terminate(), TIMEOUT) == 0
    assert log == [*[(step, k) for k in range(3) for step in ("start", "end")], ("exit", 0)]


async def test_an_async_host_callback_may_await_a_request_to_its_own_worker():
    """An async host callback that awaits a request to its own worker gets the answer: while it waits,
    it no longer holds the delivery of what the worker sent after its message, answers included."""
    answers: list[object] = []
    both = asyncio.Event()

    def setup(port):
        port.onmessage = lambda e: e.data * 10 if isinstance(e.data, int) else None
        port.post_message(1)
        port.post_message(2)

    w = ThreadWorker(setup)

    async def on_message(e):
        answers.append(await w.request(e.data))
        if len(answers) == 2:
            both.set()

    w.onmessage = on_message
    await asyncio.wait_for(both.wait(), TIMEOUT)
    assert answers == [10, 20]
    assert await asyncio.wait_for(w.terminate(), TIMEOUT) == 0


async def test_a_host_callback_returning_its_workers_exit_does_not_hold_the_delivery():
    """`w.onmessage = lambda e: w.terminate()` returns the exit itself: the messages behind the first one
    are still dispatched, and the exit is settled."""
    seen: list[object] = []
    w = ThreadWorker(lambda port: [port.post_message(k) for k in range(3)])

    def on_message(e):
        seen.append(e.data)
        return w.terminate()

    w.onmessage = on_message
    assert await asyncio.wait_for(w.wait(), TIMEOUT) == 0
    assert seen == [0, 1, 2]


async def test_calling_terminate_without_awaiting_it_in_an_async_host_callback_keeps_the_order():
    """An async host callback that calls terminate() without awaiting it (SPEC allows that) still holds
    the delivery until it returns: later messages, onexit and wait() come after it."""
    log: list[str] = []
    w = ThreadWorker(lambda port: [port.post_message(k) for k in range(1, 4)])

    async def on_message(e):
        log.append(f"start {e.data}")
        if e.data == 1:
            w.terminate()
            await asyncio.sleep(0)
        log.append(f"end {e.data}")

    w.onmessage = on_message
    w.onexit = lambda code: log.append("exit")
    assert await asyncio.wait_for(w.wait(), TIMEOUT) == 0
    assert log == ["start 1", "end 1", "start 2", "end 2", "start 3", "end 3", "exit"]


async def test_an_async_host_callback_may_wait_for_its_workers_exit_through_wait_for():
    """Awaiting the exit through asyncio.wait_for inside an async host callback, with messages behind it,
    settles: the callback stops holding the delivery once it waits."""
    seen: list[object] = []
    codes: list[int] = []
    done = asyncio.Event()
    w = ThreadWorker(lambda port: [port.post_message(k) for k in range(3)])

    async def on_message(e):
        seen.append(e.data)
        if e.data == 0:
            codes.append(await asyncio.wait_for(w.terminate(), TIMEOUT))
            done.set()

    w.onmessage = on_message
    await asyncio.wait_for(done.wait(), TIMEOUT)
    assert codes == [0]
    assert seen == [0, 1, 2]
