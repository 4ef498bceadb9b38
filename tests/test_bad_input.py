"""Bad inputs the other test files do not reach: each gets a typed error and the runtime keeps working."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading

import pytest
import uvloop
from support import answer

import arkworker
from arkworker import (
    Event,
    GlobalCallMethodNotCallableError,
    InvalidScriptError,
    ParameterError,
    SerializationError,
    ThreadWorker,
    WorkerInitializationError,
    WorkerNotRunningError,
)


async def test_event_type_must_be_a_str():
    """`on`, `once`, `off` and `Event` refuse an event type that is not a str, and listeners keep working."""
    async with ThreadWorker(answer) as w:
        for call in (
            lambda: w.on(42, print),
            lambda: w.once(42, print),
            lambda: w.off(42),
            lambda: Event(42),
        ):
            with pytest.raises(ParameterError, match="event type must be a str") as caught:
                call()
            assert caught.value.code == 401
        seen = []
        w.on("custom", seen.append)
        assert w.dispatch_event(Event("custom")) is True
        assert [event.type for event in seen] == ["custom"]


async def test_dispatch_event_needs_an_event():
    """`dispatch_event` of something that is not an Event raises ParameterError."""
    async with ThreadWorker(answer) as w:
        with pytest.raises(ParameterError, match="needs an Event"):
            w.dispatch_event("message")


@pytest.mark.parametrize("timeout", ["1", -1, True])
async def test_request_timeout_of_a_wrong_type_or_value(timeout):
    """A request timeout that is not a number of seconds >= 0 raises ParameterError, and nothing is sent."""
    async with ThreadWorker(answer) as w:
        with pytest.raises(ParameterError, match="timeout"):
            await w.request(1, timeout=timeout)
        assert w.statistics().requests == 0
        assert await w.request(2) == 2


@pytest.mark.parametrize("transfer", [bytearray(b"x"), None, 0, "", {}], ids=repr)
async def test_transfer_that_is_not_a_list_or_tuple(transfer):
    """`transfer` must be a list or tuple of buffers, on either side; a falsy non-list is no exception."""
    outcome: list[object] = []

    def setup(port):
        def on_message(e):
            try:
                port.post_message("x", transfer=transfer)
            except ParameterError as exc:
                outcome.append(exc)
            return "handled"

        port.onmessage = on_message

    async with ThreadWorker(setup) as w:
        with pytest.raises(ParameterError, match="transfer must be a list or tuple"):
            w.post_message(b"x", transfer=transfer)
        assert w.statistics().messages_sent == 0
        assert await w.request("still here") == "handled"
    assert len(outcome) == 1
    assert "transfer must be a list or tuple" in str(outcome[0])


async def test_request_handler_returning_something_uncopyable():
    """A request whose handler returns an uncopyable value raises SerializationError at the requester."""

    def setup(port):
        port.onmessage = lambda e: threading.Lock() if e.data == "lock" else e.data

    async with ThreadWorker(setup) as w:
        with pytest.raises(SerializationError) as caught:
            await w.request("lock")
        assert caught.value.code == 10200006
        assert await w.request("fine") == "fine"
    assert w.exit_code == 0


async def test_global_call_method_returning_a_coroutine():
    """A plain host method that returns a coroutine is not callable from a worker (10200020)."""

    class Host:
        def sneaky(self):
            return asyncio.sleep(0)

    def setup(port):
        def on_message(e):
            try:
                port.call_global_call_object_method("host", "sneaky", 1000)
            except GlobalCallMethodNotCallableError as exc:
                return (exc.code, str(exc))
            return "no error"

        port.onmessage = on_message

    async with ThreadWorker(setup) as w:
        w.register_global_call_object("host", Host())
        code, message = await w.request("go")
    assert code == 10200020
    assert "returned coroutine" in message


@pytest.mark.parametrize("priority", [1, "HIGH", 2.0])
async def test_priority_must_be_a_member_of_the_enum(priority):
    """A priority that is not a ThreadWorkerPriority member, even its int value, raises ParameterError."""
    with pytest.raises(ParameterError, match="priority must be a ThreadWorkerPriority"):
        ThreadWorker(answer, priority=priority)


@pytest.mark.parametrize("module", ["sys", "_json"])
async def test_module_without_python_code_is_an_invalid_script(module):
    """A built-in or extension module has no Python code to run: InvalidScriptError (10200007)."""
    with pytest.raises(InvalidScriptError, match="has no Python code") as caught:
        ThreadWorker(module)
    assert caught.value.code == 10200007


async def test_module_whose_package_fails_to_import(tmp_path, monkeypatch):
    """A dotted module whose parent package raises at import is an InvalidScriptError, not that exception."""
    package = tmp_path / "broken_pkg_for_arkworker"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('the package is broken')\n")
    (package / "work.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(InvalidScriptError, match="the package is broken"):
        ThreadWorker("broken_pkg_for_arkworker.work")
    sys.modules.pop("broken_pkg_for_arkworker", None)


async def test_directory_as_script_is_named_not_a_file(tmp_path):
    """A directory given as the script path is reported as not a file."""
    with pytest.raises(InvalidScriptError, match="is not a file"):
        ThreadWorker(str(tmp_path) + "/")


async def test_uvloop_missing(monkeypatch):
    """`loop_factory="uvloop"` without uvloop installed raises WorkerInitializationError saying so."""
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` fail
    with pytest.raises(WorkerInitializationError, match="needs uvloop"):
        ThreadWorker(answer, loop_factory="uvloop")


@pytest.mark.parametrize("listener", ["none", "async"])
async def test_worker_onerror_that_raises_reaches_the_host_after_the_original_error(listener):
    """An exception in the worker's own onerror is not only logged: the host hears of it as a worker error,
    after the error that onerror was handling, also when an async "error" listener runs after it."""

    def setup(port):
        def on_message(e):
            raise ValueError("original")

        def on_error(event):
            raise KeyError("inside onerror")

        async def error_listener(event):
            await asyncio.sleep(0)

        port.onmessage = on_message
        port.onerror = on_error
        if listener == "async":
            port.on("error", error_listener)

    heard: list[BaseException] = []
    both = asyncio.Event()

    def on_all_errors(event):
        heard.append(event.error)
        if len(heard) == 2:
            both.set()

    w = ThreadWorker(setup, name="onerror-raises")
    w.onallerrors = on_all_errors
    w.post_message("go")
    await asyncio.wait_for(both.wait(), 5)
    assert [type(error) for error in heard] == [ValueError, KeyError]
    assert await w.terminate() == 1


async def test_unawaited_posts_waiting_for_space_are_not_reported_when_the_worker_exits():
    """Posts from sync code past the inbox limit settle quietly when the worker closes itself."""
    gate = threading.Event()
    reported = []

    def setup(port):
        def on_message(e):
            if e.data == "block":
                gate.wait(5)
                port.close()

        port.onmessage = on_message

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    w = ThreadWorker(setup, max_inbox=1)
    w.post_message("block")
    pending = [w.post_message(i) for i in range(3)]  # never awaited
    gate.set()
    assert await w.wait() == 0
    assert all(p.done() for p in pending)  # type: ignore[attr-defined]
    with pytest.raises(WorkerNotRunningError):
        await pending[-1]
    assert w.statistics().discarded == 3
    del pending
    gc.collect()
    assert reported == []


@pytest.mark.parametrize("returns", ["the host loop", "a closed loop", "not a loop"])
async def test_a_loop_factory_that_returns_no_new_loop_raises_worker_initialization_error(returns):
    """loop_factory must return a new event loop: the host's running loop, a closed loop or something
    else is refused by the constructor, which starts no thread and takes no slot."""
    closed = asyncio.new_event_loop()
    closed.close()
    host = asyncio.get_running_loop()
    factory = {"the host loop": lambda: host, "a closed loop": lambda: closed, "not a loop": lambda: 42}[
        returns
    ]
    before = {t.name for t in threading.enumerate()}
    arkworker.set_max_workers(1)
    with pytest.raises(WorkerInitializationError, match="loop_factory"):
        ThreadWorker(answer, loop_factory=factory)
    assert {t.name for t in threading.enumerate()} == before
    assert not host.is_closed()
    async with ThreadWorker(answer) as w:  # the one slot is free
        assert await asyncio.wait_for(w.request("ok"), 5) == "ok"


@pytest.mark.parametrize(
    "new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
async def test_a_loop_factory_that_returns_another_workers_loop_raises_worker_initialization_error(new_loop):
    """Two workers cannot share one loop, even before the first one's thread has started it: the second
    construction is refused, starts no thread, and the first worker runs on."""
    shared = new_loop()
    before = {t.name for t in threading.enumerate()}
    first = ThreadWorker(answer, name="first", loop_factory=lambda: shared)  # its thread has not run yet
    with pytest.raises(WorkerInitializationError, match="the loop of another worker"):
        ThreadWorker(answer, loop_factory=lambda: shared)
    assert {t.name for t in threading.enumerate()} - before <= {"arkworker-first"}
    async with first:
        assert await asyncio.wait_for(first.request("ok"), 5) == "ok"


async def test_a_nan_timeout_raises_parameter_error():
    """request(timeout=nan) is not a number of seconds >= 0: ParameterError, and nothing is sent."""
    async with ThreadWorker(answer) as w:
        with pytest.raises(ParameterError, match="timeout"):
            await w.request("x", timeout=float("nan"))
        assert w.statistics().requests == 0


def test_an_event_time_stamp_that_is_not_a_number_raises_parameter_error():
    """Event(type, time_stamp) needs a number for time_stamp."""
    with pytest.raises(ParameterError, match="time_stamp"):
        Event("progress", time_stamp="abc")
    assert Event("progress", time_stamp=1.5).time_stamp == 1.5
