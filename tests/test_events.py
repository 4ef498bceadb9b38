"""Events on both sides: handler properties, listener methods, dispatch_event and callback errors."""

from __future__ import annotations

import asyncio
import threading

import pytest
import support
from support import drain, echo, failing, take, wait_thread

from arkworker import (
    ErrorEvent,
    Event,
    MessageEvent,
    ParameterError,
    SerializationError,
    ThreadWorker,
    WorkerState,
)

TIMEOUT = 5


def recorder(kind: str, sink: list[object], done: asyncio.Event):
    """A sync or async callback that appends what it receives to ``sink`` and sets ``done``."""
    if kind == "sync":

        def callback(payload):
            sink.append(payload)
            done.set()

        return callback

    async def async_callback(payload):
        await asyncio.sleep(0)
        sink.append(payload)
        done.set()

    return async_callback


KINDS = ["sync", "async"]


# -- handler properties -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_onmessage_receives_message_event(kind):
    """onmessage (sync or async) gets a MessageEvent whose data is what the worker posted."""
    got: list[object] = []
    done = asyncio.Event()
    async with ThreadWorker(lambda port: port.post_message({"hello": "host"})) as w:
        w.onmessage = recorder(kind, got, done)
        await asyncio.wait_for(done.wait(), TIMEOUT)
    assert len(got) == 1
    assert isinstance(got[0], MessageEvent)
    assert got[0].data == {"hello": "host"}


async def test_slow_async_onmessage_delays_next_message():
    """An async onmessage is awaited before the next message is dispatched (in order, one at a time)."""
    log: list[tuple[str, object]] = []
    first_started = asyncio.Event()
    release = asyncio.Event()
    all_done = asyncio.Event()
    posted_second = threading.Event()

    async def on_message(e):
        log.append(("start", e.data))
        if e.data == 1:
            first_started.set()
            await release.wait()
        log.append(("end", e.data))
        if e.data == 2:
            all_done.set()

    def setup(port):
        def on_go(e):
            port.post_message(1)
            port.post_message(2)
            posted_second.set()

        port.onmessage = on_go

    async with ThreadWorker(setup) as w:
        w.onmessage = on_message
        w.post_message("go")
        await asyncio.wait_for(first_started.wait(), TIMEOUT)
        assert await wait_thread(posted_second)
        assert w.statistics().host_inbox_depth == 1  # message 2 has arrived and waits
        assert log == [("start", 1)]
        release.set()
        await asyncio.wait_for(all_done.wait(), TIMEOUT)
    assert log == [("start", 1), ("end", 1), ("start", 2), ("end", 2)]


@pytest.mark.parametrize("kind", KINDS)
async def test_onmessageerror_called_for_uncopyable_message(kind):
    """onmessageerror (sync or async) gets an ErrorEvent whose error is the SerializationError post_message raises."""
    got: list[object] = []
    done = asyncio.Event()
    async with ThreadWorker(echo) as w:
        w.onmessageerror = recorder(kind, got, done)
        with pytest.raises(SerializationError) as info:
            w.post_message(lambda: None)
        await asyncio.wait_for(done.wait(), TIMEOUT)
        w.post_message("still running")  # the worker is unaffected
        assert await take(w, 1) == ["still running"]
    assert w.exit_code == 0  # a SerializationError raised to a host caller does not make it 1
    assert len(got) == 1
    assert isinstance(got[0], ErrorEvent)
    assert got[0].error is info.value


@pytest.mark.parametrize("kind", KINDS)
async def test_onerror_receives_worker_error_event(kind):
    """onerror (sync or async) gets an ErrorEvent for an uncaught worker exception; the worker then exits with 1."""
    got: list[object] = []
    done = asyncio.Event()
    async with ThreadWorker(failing) as w:
        w.onerror = recorder(kind, got, done)
        w.post_message("boom")
        await asyncio.wait_for(done.wait(), TIMEOUT)
        assert await asyncio.wait_for(w.wait(), TIMEOUT) == 1
    assert len(got) == 1
    event = got[0]
    assert isinstance(event, ErrorEvent)
    assert isinstance(event.error, ValueError)
    assert event.message == "ValueError: bad input"
    assert event.filename == support.__file__  # where failing() raised


@pytest.mark.parametrize("kind", KINDS)
async def test_onallerrors_receives_error_and_worker_keeps_running(kind):
    """onallerrors (sync or async) gets the ErrorEvent and the worker keeps answering."""
    got: list[object] = []
    done = asyncio.Event()
    async with ThreadWorker(failing) as w:
        w.onallerrors = recorder(kind, got, done)
        w.post_message("boom")
        await asyncio.wait_for(done.wait(), TIMEOUT)
        assert await asyncio.wait_for(w.request("ping"), TIMEOUT) == "pong"
        assert w.state is WorkerState.RUNNING
    assert len(got) == 1
    assert isinstance(got[0].error, ValueError)


@pytest.mark.parametrize("kind", KINDS)
async def test_onexit_receives_exit_code_before_terminate_returns(kind):
    """onexit (sync or async) gets the exit code and has finished by the time terminate() resolves."""
    got: list[object] = []
    done = asyncio.Event()
    w = ThreadWorker(echo)
    w.onexit = recorder(kind, got, done)
    assert await asyncio.wait_for(w.terminate(), TIMEOUT) == 0
    assert got == [0]


# -- listener methods ---------------------------------------------------------------------------


async def test_on_and_add_event_listener_both_receive_messages():
    """Listeners added with on() and add_event_listener() both receive every message, after onmessage."""
    order: list[tuple[str, object]] = []
    done = asyncio.Event()

    def last(e):
        order.append(("added", e.data))
        if e.data == 2:
            done.set()

    async with ThreadWorker(echo) as w:
        w.onmessage = lambda e: order.append(("prop", e.data))
        w.on("message", lambda e: order.append(("on", e.data)))
        w.add_event_listener("message", last)
        w.post_message(1)
        w.post_message(2)
        await asyncio.wait_for(done.wait(), TIMEOUT)
    assert order == [
        ("prop", 1),
        ("on", 1),
        ("added", 1),
        ("prop", 2),
        ("on", 2),
        ("added", 2),
    ]


async def test_once_listener_called_only_once():
    """A listener added with once() is called for the first message only."""
    once_got: list[object] = []
    all_got: list[object] = []
    done = asyncio.Event()

    def every(e):
        all_got.append(e.data)
        if len(all_got) == 3:
            done.set()

    async with ThreadWorker(echo) as w:
        w.once("message", lambda e: once_got.append(e.data))
        w.on("message", every)
        for i in range(3):
            w.post_message(i)
        await asyncio.wait_for(done.wait(), TIMEOUT)
    assert once_got == [0]
    assert all_got == [0, 1, 2]


async def test_off_with_fn_removes_only_that_listener():
    """off(type, fn) and remove_event_listener(type, fn) stop those listeners; others keep receiving."""
    a: list[object] = []
    b: list[object] = []
    c: list[object] = []
    got = asyncio.Event()

    def fa(e):
        a.append(e.data)

    def fb(e):
        b.append(e.data)

    def fc(e):
        c.append(e.data)
        got.set()

    async with ThreadWorker(echo) as w:
        w.on("message", fa)
        w.on("message", fb)
        w.on("message", fc)
        w.post_message(1)
        await asyncio.wait_for(got.wait(), TIMEOUT)
        got.clear()
        w.off("message", fa)
        w.remove_event_listener("message", fb)
        w.post_message(2)
        await asyncio.wait_for(got.wait(), TIMEOUT)
    assert a == [1]
    assert b == [1]
    assert c == [1, 2]


@pytest.mark.parametrize("method", ["off", "remove_event_listener"])
async def test_off_without_fn_removes_all_listeners_of_type(method):
    """off(type) without fn removes every listener of that type, so messages go to messages() instead."""
    a: list[object] = []
    b: list[object] = []
    exits: list[object] = []
    async with ThreadWorker(echo) as w:
        w.on("message", a.append)
        w.on("message", b.append)
        w.on("exit", exits.append)
        getattr(w, method)("message")
        w.post_message("to buffer")
        assert await take(w, 1) == ["to buffer"]
    assert a == []
    assert b == []
    assert exits == [0]  # other types keep their listeners


async def test_remove_all_listener_removes_every_type():
    """remove_all_listener() removes the listeners of every event type."""
    messages: list[object] = []
    exits: list[object] = []
    async with ThreadWorker(echo) as w:
        w.on("message", messages.append)
        w.on("exit", exits.append)
        w.remove_all_listener()
        w.post_message("to buffer")
        assert await take(w, 1) == ["to buffer"]
    assert messages == []
    assert exits == []


async def test_listener_not_added_twice():
    """Registering the same function twice for a type (on, add_event_listener, once) calls it once per event."""
    dup: list[object] = []
    done = asyncio.Event()

    def fn(e):
        dup.append(e.data)

    async with ThreadWorker(echo) as w:
        w.on("message", fn)
        w.on("message", fn)
        w.add_event_listener("message", fn)
        w.once("message", fn)
        w.on("message", lambda e: done.set())
        w.post_message("x")
        await asyncio.wait_for(done.wait(), TIMEOUT)
    assert dup == ["x"]


async def test_exit_and_error_listeners_receive_payloads():
    """ "error" listeners get the ErrorEvent (and count as handling it) and "exit" listeners get the exit code."""
    errors: list[object] = []
    exits: list[object] = []
    async with ThreadWorker(failing) as w:
        w.on("error", errors.append)
        w.on("exit", exits.append)
        w.post_message("boom")
        assert await asyncio.wait_for(w.wait(), TIMEOUT) == 1
    assert len(errors) == 1
    assert isinstance(errors[0], ErrorEvent)
    assert isinstance(errors[0].error, ValueError)
    assert exits == [1]


# -- dispatch_event -----------------------------------------------------------------------------


async def test_dispatch_custom_event_calls_listeners_synchronously():
    """dispatch_event(Event("custom")) returns True after calling the "custom" listeners synchronously."""
    got: list[object] = []
    async with ThreadWorker(echo) as w:
        w.on("custom", got.append)
        event = Event("custom")
        assert w.dispatch_event(event) is True
        assert got == [event]
        assert w.dispatch_event(Event("nobody-listens")) is True


async def test_dispatch_event_awaits_an_async_listener_before_the_next():
    """dispatch_event runs listeners in order: one after an async listener waits until that one is done."""
    order: list[str] = []
    started, gate, done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow(e):
        order.append("slow started")
        started.set()
        await gate.wait()
        order.append("slow finished")

    def after(e):
        order.append("after")
        done.set()

    async with ThreadWorker(echo) as w:
        w.on("custom", lambda e: order.append("first"))
        w.on("custom", slow)
        w.on("custom", after)
        assert w.dispatch_event(Event("custom")) is True
        assert order == ["first"]
        await asyncio.wait_for(started.wait(), TIMEOUT)
        assert order == ["first", "slow started"]
        gate.set()
        await asyncio.wait_for(done.wait(), TIMEOUT)
    assert order == ["first", "slow started", "slow finished", "after"]


async def test_dispatch_message_event_calls_onmessage_and_listeners():
    """dispatch_event of a "message" MessageEvent calls onmessage and the "message" listeners, synchronously."""
    prop: list[object] = []
    listener: list[object] = []
    async with ThreadWorker(echo) as w:
        w.onmessage = prop.append
        w.on("message", listener.append)
        event = MessageEvent("local")
        assert w.dispatch_event(event) is True
        assert prop == [event]
        assert listener == [event]


@pytest.mark.parametrize(("event_type", "prop"), [("error", "onerror"), ("messageerror", "onmessageerror")])
async def test_dispatch_error_events_call_handler_property(event_type, prop):
    """dispatch_event of an "error" or "messageerror" ErrorEvent also calls onerror / onmessageerror."""
    called: list[object] = []
    listened: list[object] = []
    async with ThreadWorker(echo) as w:
        setattr(w, prop, called.append)
        w.on(event_type, listened.append)
        event = ErrorEvent("RuntimeError: local", "here.py", 1, 0, RuntimeError("local"), event_type)
        assert w.dispatch_event(event) is True
        assert called == [event]
        assert listened == [event]
    assert w.exit_code == 0  # a local dispatch is not a worker error


# -- errors raised by host callbacks ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_host_callback_exception_goes_to_loop_handler_and_delivery_continues(kind, loop_errors):
    """An exception in a host callback reaches the loop's exception handler; other callbacks and later messages still run."""
    boom = RuntimeError("callback failed")
    got: list[object] = []
    done = asyncio.Event()

    if kind == "sync":

        def bad(e):
            raise boom

    else:

        async def bad(e):
            await asyncio.sleep(0)
            raise boom

    def good(e):
        got.append(e.data)
        if len(got) == 2:
            done.set()

    async with ThreadWorker(echo) as w:
        w.onmessage = bad
        w.on("message", good)
        w.post_message(1)
        w.post_message(2)
        await asyncio.wait_for(done.wait(), TIMEOUT)
        await loop_errors.wait_for(2)
        assert w.state is WorkerState.RUNNING
    assert got == [1, 2]
    assert loop_errors.exceptions == [boom, boom]


async def test_dispatch_event_listener_exception_goes_to_loop_handler(loop_errors):
    """An exception in a listener run by dispatch_event goes to the loop's handler and later listeners still run."""
    boom = RuntimeError("listener failed")
    got: list[object] = []

    def bad(e):
        raise boom

    async with ThreadWorker(echo) as w:
        w.on("custom", bad)
        w.on("custom", got.append)
        assert w.dispatch_event(Event("custom")) is True
        assert len(got) == 1
        await loop_errors.wait_for(1)
    assert loop_errors.exceptions == [boom]


# -- worker side --------------------------------------------------------------------------------


async def test_worker_side_listeners_on_once_and_no_duplicates():
    """Worker-side on()/once() listeners receive messages; once runs once and a duplicate on() is ignored."""

    def setup(port):
        def a(e):
            port.post_message(f"a{e.data}")

        def b(e):
            port.post_message(f"b{e.data}")

        port.on("message", a)
        port.add_event_listener("message", a)
        port.once("message", b)

    async with ThreadWorker(setup) as w:
        w.post_message(1)
        w.post_message(2)
        assert await take(w, 3) == ["a1", "b1", "a2"]
    assert await drain(w) == []


async def test_worker_side_off_and_remove_all_listener():
    """Worker-side off(type, fn) and remove_all_listener() stop the listeners they remove."""

    def setup(port):
        def a(e):
            port.post_message(f"a{e.data}")
            if e.data == "drop-a":
                port.off("message", a)
            if e.data == "drop-all":
                port.remove_all_listener()

        def b(e):
            port.post_message(f"b{e.data}")

        port.on("message", a)
        port.on("message", b)

    async with ThreadWorker(setup) as w:
        w.post_message("drop-a")
        w.post_message(2)
        assert await take(w, 3) == ["adrop-a", "bdrop-a", "b2"]


async def test_worker_async_onmessage_handled_one_at_a_time():
    """A worker's async onmessage is awaited before the next message is handled."""
    gate = threading.Event()

    def setup(port):
        async def on_message(e):
            port.post_message(("start", e.data))
            if e.data == 1:
                await asyncio.to_thread(gate.wait, TIMEOUT)
            port.post_message(("end", e.data))

        port.onmessage = on_message

    async with ThreadWorker(setup) as w:
        w.post_message(1)
        w.post_message(2)
        assert await take(w, 1) == [("start", 1)]
        assert w.statistics().inbox_depth == 2
        gate.set()
        assert await take(w, 3) == [("end", 1), ("start", 2), ("end", 2)]


async def test_worker_onerror_runs_in_worker_before_host_hears():
    """The worker's own onerror runs (in the worker thread) before the host's onerror, and what it posts arrives."""
    worker_saw = threading.Event()
    worker_events: list[object] = []
    worker_threads: list[str] = []
    host_saw_worker_first: list[bool] = []

    def setup(port):
        def on_error(event):
            worker_events.append(event)
            worker_threads.append(threading.current_thread().name)
            worker_saw.set()
            port.post_message("from worker onerror")

        def on_message(e):
            raise ValueError("worker broke")

        port.onerror = on_error
        port.onmessage = on_message

    async with ThreadWorker(setup, name="ev-onerror") as w:
        w.onerror = lambda event: host_saw_worker_first.append(worker_saw.is_set())
        w.post_message("go")
        assert await asyncio.wait_for(w.wait(), TIMEOUT) == 1
    assert host_saw_worker_first == [True]
    assert len(worker_events) == 1
    assert isinstance(worker_events[0], ErrorEvent)
    assert isinstance(worker_events[0].error, ValueError)
    assert worker_threads == ["arkworker-ev-onerror"]
    assert await drain(w) == ["from worker onerror"]


# -- parameter checks ---------------------------------------------------------------------------


@pytest.mark.parametrize("prop", ["onmessage", "onmessageerror", "onerror", "onallerrors", "onexit"])
async def test_non_callable_handler_raises_parameter_error(prop):
    """Setting a host handler property to a non-callable raises ParameterError (code 401); None clears it."""
    async with ThreadWorker(echo) as w:
        with pytest.raises(ParameterError) as info:
            setattr(w, prop, 42)
        assert info.value.code == 401
        assert isinstance(info.value, TypeError)
        assert getattr(w, prop) is None
        setattr(w, prop, print)
        setattr(w, prop, None)
        assert getattr(w, prop) is None


@pytest.mark.parametrize("method", ["on", "once", "add_event_listener"])
async def test_non_callable_listener_raises_parameter_error(method):
    """Adding a non-callable listener raises ParameterError (code 401)."""
    async with ThreadWorker(echo) as w:
        with pytest.raises(ParameterError) as info:
            getattr(w, method)("message", "not callable")
        assert info.value.code == 401


async def test_worker_side_non_callable_handler_raises_parameter_error():
    """Inside the worker, setting onmessage to a non-callable raises ParameterError (code 401)."""
    seen: list[BaseException] = []

    def setup(port):
        try:
            port.onmessage = "nope"
        except Exception as exc:
            seen.append(exc)

    async with ThreadWorker(setup) as w:
        pass
    assert w.exit_code == 0
    assert len(seen) == 1
    assert isinstance(seen[0], ParameterError)
    assert seen[0].code == 401


async def test_worker_handler_changed_inside_a_batch_takes_the_very_next_message():
    """A handler that replaces onmessage, or adds a listener, changes who gets the next queued message."""

    def setup(port):
        def first(e):
            port.post_message(f"first{e.data}")
            if e.data == 1:
                port.onmessage = second

        def second(e):
            port.post_message(f"second{e.data}")
            if e.data == 2:
                port.on("message", listener)

        def listener(e):
            port.post_message(f"listener{e.data}")

        port.onmessage = first

    async with ThreadWorker(setup) as w:
        for i in range(4):  # posted back to back: one batch in the worker
            w.post_message(i)
        assert await take(w, 5) == ["first0", "first1", "second2", "second3", "listener3"]
    assert await drain(w) == []


async def test_host_handler_changed_inside_a_batch_takes_the_very_next_message():
    """On the host too, a handler that replaces onmessage changes who gets the next queued message."""
    seen: list[str] = []
    done = asyncio.Event()

    def first(e):
        seen.append(f"first{e.data}")
        if e.data == 1:
            w.onmessage = second

    def second(e):
        seen.append(f"second{e.data}")
        if e.data == 3:
            done.set()

    def setup(port):
        port.onmessage = lambda e: [port.post_message(i) for i in range(4)]  # one batch to the host

    async with ThreadWorker(setup) as w:
        w.onmessage = first
        w.post_message("go")
        await asyncio.wait_for(done.wait(), TIMEOUT)
    assert seen == ["first0", "first1", "second2", "second3"]
