"""Errors (SPEC §5) and bad inputs to the constructor (SPEC §2)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sysconfig
import threading
import uuid
from collections.abc import Iterator

import pytest
from support import answer, failing

import arkworker
from arkworker import (
    ErrorEvent,
    Event,
    InvalidScriptError,
    NotInWorkerError,
    ParameterError,
    ThreadWorker,
    WorkerCrashedError,
    WorkerError,
    WorkerInitializationError,
    WorkerNotRunningError,
    WorkerState,
)


async def assert_runtime_works():
    """A fresh worker starts, answers and exits cleanly."""
    async with ThreadWorker(answer) as w:
        assert await w.request("alive?") == "alive?"
    assert w.exit_code == 0


def future_of_first(loop: asyncio.AbstractEventLoop):
    """A future and a callback that resolves it with the first value the callback is called with."""
    future = loop.create_future()

    def callback(value):
        if not future.done():
            future.set_result(value)

    return future, callback


# -- the error classes ----------------------------------------------------------------------------------

CODES = {
    "ParameterError": 401,
    "WorkerInitializationError": 10200003,
    "WorkerNotRunningError": 10200004,
    "SerializationError": 10200006,
    "InvalidScriptError": 10200007,
    "GlobalCallObjectNotRegisteredError": 10200019,
    "GlobalCallMethodNotCallableError": 10200020,
    "GlobalCallTimeoutError": 10200021,
    "WorkerCrashedError": None,
    "NotInWorkerError": None,
}


@pytest.mark.parametrize(("name", "code"), CODES.items(), ids=CODES.keys())
def test_error_class_is_exported_with_its_code(name, code):
    """Every SPEC §5 error class is importable from arkworker, subclasses WorkerError and carries its code."""
    cls = getattr(arkworker, name)
    assert isinstance(cls, type)
    assert issubclass(cls, arkworker.WorkerError)
    assert cls.code == code
    assert cls("message").code == code


def test_parameter_error_is_type_and_value_error():
    """ParameterError is also a TypeError and a ValueError, so generic handlers catch it."""
    assert issubclass(ParameterError, TypeError)
    assert issubclass(ParameterError, ValueError)
    with pytest.raises(TypeError):
        raise ParameterError("x")
    with pytest.raises(ValueError):
        raise ParameterError("x")


def test_global_call_timeout_error_is_timeout_error():
    """GlobalCallTimeoutError is also a TimeoutError."""
    assert issubclass(arkworker.GlobalCallTimeoutError, TimeoutError)
    with pytest.raises(TimeoutError):
        raise arkworker.GlobalCallTimeoutError("late")


# -- worker_port outside a worker ----------------------------------------------------------------------

NOT_IN_WORKER = r"(?i)(inside|outside|in) a worker|not in a worker"


@pytest.mark.parametrize(
    "use",
    [
        lambda: arkworker.worker_port.post_message("x"),
        lambda: arkworker.worker_port.name,
        lambda: setattr(arkworker.worker_port, "onmessage", print),
        lambda: arkworker.worker_port.close(),  # noqa: PLW0108 - the attribute access itself must raise
    ],
    ids=["post_message", "name", "set-onmessage", "close"],
)
async def test_worker_port_outside_worker_raises_not_in_worker(use):
    """Using arkworker.worker_port on the host raises NotInWorkerError with a message that says so."""
    with pytest.raises(NotInWorkerError, match=NOT_IN_WORKER):
        use()


def test_worker_port_in_plain_thread_raises_not_in_worker():
    """Using arkworker.worker_port on a plain thread that is not a worker raises NotInWorkerError."""
    outcome: list = []

    def run():
        try:
            arkworker.worker_port.post_message("x")
        except NotInWorkerError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(5)
    assert len(outcome) == 1
    assert isinstance(outcome[0], WorkerError)


async def test_worker_port_inside_worker_is_that_workers_port():
    """Inside a worker thread arkworker.worker_port is that worker's port (the contrast to NotInWorkerError)."""

    def setup(port):
        port.onmessage = lambda e: (arkworker.worker_port.name, arkworker.worker_port.self is port)

    async with ThreadWorker(setup, name="inside") as w:
        assert await w.request("who") == ("inside", True)


# -- ErrorEvent -----------------------------------------------------------------------------------------

HANDLER_SCRIPTS = {
    "sync": (
        "from arkworker import worker_port\n"
        "\n"
        "\n"
        "def check(value):\n"
        "    raise ValueError(f'bad value {value!r}')  # raises\n"
        "\n"
        "\n"
        "def on_message(e):\n"
        "    check(e.data)\n"
        "\n"
        "\n"
        "worker_port.onmessage = on_message\n"
    ),
    "async": (
        "import asyncio\n"
        "\n"
        "from arkworker import worker_port\n"
        "\n"
        "\n"
        "def check(value):\n"
        "    raise ValueError(f'bad value {value!r}')  # raises\n"
        "\n"
        "\n"
        "async def on_message(e):\n"
        "    await asyncio.sleep(0)\n"
        "    check(e.data)\n"
        "\n"
        "\n"
        "worker_port.onmessage = on_message\n"
    ),
    "stdlib": (
        "import json\n"
        "\n"
        "from arkworker import worker_port\n"
        "\n"
        "\n"
        "def on_message(e):\n"
        "    return json.loads(e.data)  # raises\n"
        "\n"
        "\n"
        "worker_port.onmessage = on_message\n"
    ),
}


def line_of(source: str, marker: str) -> int:
    """1-based number of the first line of ``source`` containing ``marker``."""
    return next(n for n, line in enumerate(source.splitlines(), 1) if marker in line)


@pytest.mark.parametrize("kind", HANDLER_SCRIPTS.keys())
async def test_error_event_points_at_worker_script_line(tmp_path, kind):
    """A handler's uncaught error gives onerror an ErrorEvent locating the user line that raised."""
    source = HANDLER_SCRIPTS[kind]
    path = tmp_path / f"failing_{kind}.py"
    path.write_text(source)
    got, on_error = future_of_first(asyncio.get_running_loop())
    w = ThreadWorker(str(path))
    w.onerror = on_error
    w.post_message("{not json")
    event = await asyncio.wait_for(got, 5)
    assert await w.wait() == 1
    assert isinstance(event, ErrorEvent)
    exc = event.error
    assert isinstance(exc, ValueError)  # json.JSONDecodeError is a ValueError too
    assert event.message == f"{type(exc).__name__}: {exc}"
    assert event.filename == str(path)  # tmp_path is absolute
    assert event.lineno == line_of(source, "# raises")
    assert isinstance(event.colno, int)


def installed(source: str) -> dict[str, object]:
    """Run ``source`` as if it were a module of an installed package (its file in site-packages)."""
    filename = os.path.join(sysconfig.get_paths()["purelib"], "some_package", "handlers.py")
    namespace: dict[str, object] = {"__file__": filename}
    exec(compile(source, filename, "exec"), namespace)  # as if imported from that file
    return namespace


async def test_error_event_points_at_an_installed_package_not_the_standard_library():
    """Without user code in the traceback, an installed package's frame is used, though site-packages
    may lie inside the standard library's directory (a virtual environment's does): an error it raises
    through json points at it."""
    package = installed("import json\n\ndef on_message(e):\n    return json.loads(e.data)\n")
    got, on_error = future_of_first(asyncio.get_running_loop())
    w = ThreadWorker(lambda port: setattr(port, "onmessage", package["on_message"]))
    w.onerror = on_error
    w.post_message("{not json")
    event = await asyncio.wait_for(got, 5)
    assert await w.wait() == 1
    assert (event.filename, event.lineno) == (package["__file__"], 4)


def handler_calling_a_package(e):
    """A handler of this test module that calls into an installed package, which raises."""
    return PACKAGE["check"](e.data)


PACKAGE = installed("def check(value):\n    raise ValueError(value)\n")


async def test_error_event_points_at_user_code_that_called_an_installed_package():
    """User code that called an installed package which raised is where the ErrorEvent points."""
    got, on_error = future_of_first(asyncio.get_running_loop())
    w = ThreadWorker(lambda port: setattr(port, "onmessage", handler_calling_a_package))
    w.onerror = on_error
    w.post_message("bad")
    event = await asyncio.wait_for(got, 5)
    assert await w.wait() == 1
    assert (event.filename, event.lineno) == (__file__, handler_calling_a_package.__code__.co_firstlineno + 2)


def failing_handler(e):
    """A handler of this test module that always raises."""
    raise KeyError(e.data)


async def test_error_event_of_callable_script_points_at_test_module():
    """For a callable script, the ErrorEvent points at the line of the test module that raised."""

    def setup(port):
        port.onmessage = failing_handler

    got, on_error = future_of_first(asyncio.get_running_loop())
    w = ThreadWorker(setup)
    w.onerror = on_error
    w.post_message("k")
    event = await asyncio.wait_for(got, 5)
    assert await w.wait() == 1
    assert event.message == "KeyError: 'k'"
    assert event.filename == __file__
    assert event.lineno == failing_handler.__code__.co_firstlineno + 2
    assert isinstance(event.error, KeyError)


async def test_onallerrors_keeps_worker_alive():
    """With onallerrors set, a handler error is reported and the worker keeps answering requests."""
    events: list = []
    first, on_all = future_of_first(asyncio.get_running_loop())
    w = ThreadWorker(failing)

    def record(event):
        events.append(event)
        on_all(event)

    w.onallerrors = record
    w.post_message("boom")
    event = await asyncio.wait_for(first, 5)
    assert isinstance(event, ErrorEvent)
    assert isinstance(event.error, ValueError)
    assert event.message == "ValueError: bad input"
    assert await w.request("ping") == "pong"
    assert w.state is WorkerState.RUNNING
    w.post_message("boom")
    assert await w.request("ping again") == "pong"  # handled after the second boom
    assert await w.terminate() == 1  # any worker error makes the exit code 1
    assert len(events) == 2


async def test_onerror_alone_ends_worker():
    """With only onerror set, a handler error terminates the worker and wait() returns 1."""
    got, on_error = future_of_first(asyncio.get_running_loop())
    w = ThreadWorker(failing)
    w.onerror = on_error
    assert await w.request("ping") == "pong"
    w.post_message("boom")
    event = await asyncio.wait_for(got, 5)
    assert isinstance(event.error, ValueError)
    assert await asyncio.wait_for(w.wait(), 5) == 1
    assert w.state is WorkerState.TERMINATED
    assert w.exit_code == 1
    with pytest.raises(WorkerNotRunningError):
        w.post_message("ping")


FAILING_STARTS = {
    "syntax-error": ("x = 1\ndef broken(:\n    pass\n", SyntaxError, 2),
    "raise-at-import": (
        "import os\n\n\ndef load():\n    raise RuntimeError('cannot load')\n\n\nload()\n",
        RuntimeError,
        5,
    ),
}


@pytest.mark.parametrize("kind", FAILING_STARTS.keys())
async def test_script_failing_to_load_takes_error_path(tmp_path, kind):
    """A script that fails while loading reports an ErrorEvent, never runs, exits 1 and reports posted messages."""
    source, error_type, lineno = FAILING_STARTS[kind]
    path = tmp_path / f"bad_{kind.replace('-', '_')}.py"
    path.write_text(source)
    seen_states: list = []
    got, on_error = future_of_first(asyncio.get_running_loop())

    w = ThreadWorker(str(path))
    seen_states.append(w.state)
    w.post_message("first")  # right after construction: must not raise
    w.post_message("second")

    def record_error(event):
        seen_states.append(w.state)
        on_error(event)

    w.onerror = record_error
    w.onexit = lambda code: seen_states.append(w.state)
    event = await asyncio.wait_for(got, 5)
    assert await asyncio.wait_for(w.wait(), 5) == 1
    assert isinstance(event, ErrorEvent)
    assert isinstance(event.error, error_type)
    assert event.message == f"{error_type.__name__}: {event.error}"
    assert event.filename == str(path)  # tmp_path is absolute
    assert event.lineno == lineno
    assert WorkerState.RUNNING not in seen_states
    assert w.state is WorkerState.TERMINATED
    assert w.statistics().discarded >= 2
    await assert_runtime_works()


async def test_posts_of_a_failing_top_level_and_of_its_onerror_are_delivered():
    """A script whose top level fails never reaches RUNNING, but what it posted before failing and what
    its own onerror posted both reach the host, in order."""

    def script(port):
        port.onerror = lambda e: port.post_message(f"onerror saw {type(e.error).__name__}")
        port.post_message("before the failure")
        raise ValueError("the top level failed")

    got, on_error = future_of_first(asyncio.get_running_loop())
    w = ThreadWorker(script)
    w.onerror = on_error
    received = [data async for data in w.messages()]
    assert received == ["before the failure", "onerror saw ValueError"]
    assert isinstance((await asyncio.wait_for(got, 5)).error, ValueError)
    assert await asyncio.wait_for(w.wait(), 5) == 1


@pytest.mark.parametrize("onerror", ["returns post_message's awaitable", "returns None", "async"])
@pytest.mark.parametrize("handler", ["sync", "async"])
async def test_the_host_hears_of_a_handler_error_before_the_next_messages_output(onerror, handler):
    """A worker onerror that posts (returning post_message's awaitable, as `lambda e: port.post_message(...)`
    does, or nothing, or an async one that awaits first) is done before the next message is handled, as
    an async handler is: the host gets its post, then the error, then the next message's output."""

    def script(port):
        def on_error(e):
            done = port.post_message(f"onerror saw {type(e.error).__name__}")
            return done if onerror == "returns post_message's awaitable" else None

        async def on_error_async(e):
            for _ in range(3):
                await asyncio.sleep(0)  # the inbox's next message waits meanwhile
            on_error(e)

        def on_message(e):
            if e.data == "bad":
                raise ValueError("bad")
            port.post_message(f"echo {e.data}")

        async def on_message_async(e):
            await asyncio.sleep(0)
            on_message(e)

        port.onerror = on_error_async if onerror == "async" else on_error
        port.onmessage = on_message_async if handler == "async" else on_message
        both_posted.wait(5)  # so that the first run of the inbox finds both messages

    order: list[str] = []
    both_posted = threading.Event()
    w = ThreadWorker(script)
    w.onmessage = lambda e: order.append(e.data)
    w.onerror = lambda e: order.append(f"host heard {e.message}")
    w.post_message("bad")
    w.post_message("good")
    both_posted.set()
    assert await asyncio.wait_for(w.wait(), 5) == 1
    assert order == ["onerror saw ValueError", "host heard ValueError: bad", "echo good"]


async def test_cleanly_terminated_worker_discards_nothing():
    """A worker that handled every message before terminate() reports nothing discarded (contrast to a failed start)."""
    w = ThreadWorker(answer)
    w.post_message("handled")
    assert await w.request("handled too") == "handled too"
    assert await w.terminate() == 0
    assert w.statistics().discarded == 0


# -- bad scripts and options ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "script",
    [
        "tests/scripts/definitely_missing_script.py",
        "no/such/dir/worker.py",
        "arkworker_no_such_package.sub_module",
        "arkworker_no_such_module_xyz",
    ],
)
async def test_missing_script_raises_invalid_script_error(script):
    """A script path or dotted module that does not exist raises InvalidScriptError (10200007) from the constructor."""
    arkworker.set_max_workers(1)  # a slot leaked by the failed constructor would make the next worker fail
    with pytest.raises(InvalidScriptError) as caught:
        ThreadWorker(script)
    assert caught.value.code == 10200007
    await assert_runtime_works()


async def test_missing_absolute_path_raises_invalid_script_error(tmp_path):
    """An absolute pathlib path that does not exist raises InvalidScriptError from the constructor."""
    with pytest.raises(InvalidScriptError):
        ThreadWorker(tmp_path / "missing.py")
    await assert_runtime_works()


async def test_existing_dotted_module_runs(tmp_path, monkeypatch):
    """A dotted module name that exists runs as the worker script, relative imports included."""
    package = f"arkw_pkg_{uuid.uuid4().hex[:8]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "helper.py").write_text("def double(x):\n    return 2 * x\n")
    (tmp_path / package / "worker_mod.py").write_text(
        "from arkworker import worker_port\n"
        "from .helper import double\n"
        "\n"
        "worker_port.onmessage = lambda e: (worker_port.name, double(e.data))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    async with ThreadWorker(f"{package}.worker_mod", name="dotted") as w:
        assert await w.request(21) == ("dotted", 42)
    assert w.exit_code == 0


def test_constructor_without_running_loop_raises():
    """Constructing a worker with no running event loop raises WorkerInitializationError saying so."""
    with pytest.raises(WorkerInitializationError, match="running event loop") as caught:
        ThreadWorker(answer)
    assert caught.value.code == 10200003


async def test_constructor_on_thread_without_loop_raises():
    """Constructing a worker on a thread with no running loop raises WorkerInitializationError, then all still works."""
    arkworker.set_max_workers(1)
    with pytest.raises(WorkerInitializationError, match="running event loop"):
        await asyncio.to_thread(ThreadWorker, answer)
    await assert_runtime_works()


BAD_OPTIONS = {
    "script=123": ((123,), {}),
    "script=None": ((None,), {}),
    "name=5": ((answer,), {"name": 5}),
    "max_inbox=0": ((answer,), {"max_inbox": 0}),
    "max_inbox=1.5": ((answer,), {"max_inbox": 1.5}),
    "clone='yes'": ((answer,), {"clone": "yes"}),
    "priority='high'": ((answer,), {"priority": "high"}),
    "priority=99": ((answer,), {"priority": 99}),
    "loop_factory=42": ((answer,), {"loop_factory": 42}),
    "max_message_size=0": ((answer,), {"max_message_size": 0}),
}


@pytest.mark.parametrize(("args", "kwargs"), BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
async def test_wrong_argument_types_raise_parameter_error(args, kwargs):
    """Wrong constructor argument types or values raise ParameterError (401) and the runtime keeps working."""
    arkworker.set_max_workers(1)  # a slot leaked by the failed constructor would make the next worker fail
    with pytest.raises(ParameterError) as caught:
        ThreadWorker(*args, **kwargs)
    assert caught.value.code == 401
    # SPEC §5 lists bad options under WorkerInitializationError too: an option's error is both.
    is_option = not args or args[0] is answer
    assert isinstance(caught.value, WorkerInitializationError) is is_option
    await assert_runtime_works()


class UnprintableError(Exception):
    """An exception whose ``__str__`` raises: the error path must not fail on it."""

    def __str__(self) -> str:
        raise RuntimeError("no str for you")


async def test_a_worker_error_whose_str_raises_is_reported_and_the_worker_keeps_running():
    """A handler error whose __str__ raises still reaches onallerrors, with a placeholder message; the
    worker keeps answering, and its exit settles with code 1."""
    messages: list[str] = []

    def script(port):
        def on_message(e):
            if e.data == "bad":
                raise UnprintableError
            return e.data

        port.onmessage = on_message

    w = ThreadWorker(script)
    w.onallerrors = lambda event: messages.append(event.message)
    w.post_message("bad")
    assert await asyncio.wait_for(w.request("ping"), 5) == "ping"
    assert messages == ["UnprintableError: <str() failed>"]
    assert await asyncio.wait_for(w.terminate(), 5) == 1
    await assert_runtime_works()


async def test_a_crash_whose_str_raises_still_raises_worker_crashed_error():
    """Leaving `async with` after an unhandled error whose __str__ raises raises WorkerCrashedError."""

    def script(port):
        raise UnprintableError

    with pytest.raises(WorkerCrashedError) as info:
        async with ThreadWorker(script) as w:
            assert await asyncio.wait_for(w.wait(), 5) == 1
    assert isinstance(info.value.__cause__, UnprintableError)
    assert "UnprintableError: <str() failed>" in str(info.value)


async def test_a_host_callback_raising_a_base_exception_is_reported_and_delivery_goes_on():
    """A host callback that raises a BaseException that is not an exit signal goes to the host loop's
    exception handler, like any callback error: the later messages are still delivered, and the exit
    settles."""

    class Abort(BaseException):
        pass

    reported: list[BaseException] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda loop, context: reported.append(context["exception"])
    )
    got: list[object] = []
    w = ThreadWorker(lambda port: [port.post_message(k) for k in range(4)])

    def on_message(e):
        got.append(e.data)
        if e.data == 1:
            raise Abort

    w.onmessage = on_message
    assert await asyncio.wait_for(w.terminate(), 5) == 0
    assert got == [0, 1, 2, 3]
    assert [type(exc) for exc in reported] == [Abort]
    assert w.statistics().host_inbox_depth == 0


class _Abort(BaseException):
    """Neither an error nor an exit signal."""


async def _cancelled() -> None:
    """Await a cancelled future: a callback ends with a CancelledError of its own, no task is cancelled."""
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    await future


@pytest.mark.parametrize("ending", [_Abort, asyncio.CancelledError])
async def test_an_async_host_callback_ending_with_a_base_exception_is_reported_and_delivery_goes_on(ending):
    """An async host onmessage and onexit that end with a BaseException (one that is not an exit signal, or
    a CancelledError of their own) go to the loop's exception handler: the listeners after them still run,
    the later messages are delivered, and terminate(), wait() and leaving `async with` return."""
    reported: list[BaseException] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda loop, context: reported.append(context["exception"])
    )
    log: list[object] = []

    async def fail(_data: object) -> None:
        if ending is _Abort:
            raise _Abort
        await _cancelled()

    async def on_message(e):
        await fail(e.data)

    async def on_exit(code):
        await fail(code)

    async with ThreadWorker(lambda port: [port.post_message(k) for k in range(3)]) as w:
        w.onmessage = on_message
        w.on("message", lambda e: log.append(e.data))
        w.onexit = on_exit
        w.on("exit", lambda code: log.append(("exit", code)))
        assert await asyncio.wait_for(w.terminate(), 5) == 0
        assert await asyncio.wait_for(w.wait(), 5) == 0
    assert log == [0, 1, 2, ("exit", 0)]
    assert [type(exc) for exc in reported] == [ending] * 4


async def test_dispatch_event_on_the_host_reports_a_base_exception_and_calls_the_rest():
    """A host listener raising a BaseException that is not an exit signal, sync or async, is reported to
    the loop's exception handler by dispatch_event, and the listeners after it are still called."""
    reported: list[BaseException] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda loop, context: reported.append(context["exception"])
    )
    log: list[str] = []
    done = asyncio.Event()

    def sync_abort(_e):
        raise _Abort

    async def async_abort(_e):
        raise _Abort

    async with ThreadWorker(answer) as w:
        w.on("sync", sync_abort)
        w.on("sync", lambda e: log.append("after sync"))
        w.on("async", async_abort)
        w.on("async", lambda e: [log.append("after async"), done.set()])
        assert w.dispatch_event(Event("sync")) is True
        assert log == ["after sync"]
        assert w.dispatch_event(Event("async")) is True
        await asyncio.wait_for(done.wait(), 5)
    assert log == ["after sync", "after async"]
    assert [type(exc) for exc in reported] == [_Abort, _Abort]


async def test_a_worker_async_handler_ending_with_its_own_cancelled_error_is_a_worker_error():
    """In the worker, an async onmessage that ends with a CancelledError of its own (no task was cancelled)
    is a worker error, as the same raise from a sync handler is: the host's onerror hears of it and the
    exit code is 1; the worker's listeners after it still run."""
    heard: list[str] = []

    def script(port):
        async def on_message(e):
            await _cancelled()

        port.onmessage = on_message
        port.on("message", lambda e: port.post_message(("after", e.data)))

    async with ThreadWorker(script) as w:
        w.onallerrors = lambda event: heard.append(event.message)
        await w.post_message(1)
        assert await asyncio.wait_for(anext(aiter(w.messages())), 5) == ("after", 1)
        assert await asyncio.wait_for(w.terminate(), 5) == 1
    assert heard == ["CancelledError: "]


async def test_the_host_hears_of_a_worker_error_whose_async_onerror_ends_with_a_cancelled_error():
    """A worker error whose worker-side async onerror ends with a CancelledError of its own still reaches
    the host, first, followed by the onerror's own failure; the exit code is 1."""
    heard: list[str] = []

    def script(port):
        async def on_error(_event):
            await _cancelled()

        def on_message(e):
            raise ValueError("real error")

        port.onerror = on_error
        port.onmessage = on_message

    w = ThreadWorker(script)
    w.onallerrors = lambda event: heard.append(event.message)
    await w.post_message(1)
    assert await asyncio.wait_for(w.terminate(), 5) == 1  # terminate() waits for the error reports
    assert heard == ["ValueError: real error", "CancelledError: "]


@pytest.mark.parametrize("signal", [KeyboardInterrupt, SystemExit])
def test_an_exit_signal_from_a_host_callback_leaves_the_loop_and_delivery_resumes_after(signal):
    """KeyboardInterrupt or SystemExit raised by a host callback leaves the host loop, as in asyncio,
    before anything else is dispatched; run again, the loop delivers the rest and finishes the exit."""
    got: list[object] = []

    def on_message(e):
        got.append(e.data)
        if e.data == 0:
            raise signal

    def script(port):
        for k in range(3):
            port.post_message(k)

    with _own_loop() as (loop, workers):
        w = loop.run_until_complete(_start(workers, script, on_message))
        with pytest.raises(signal):
            loop.run_until_complete(asyncio.wait_for(w.wait(), 5))
        assert got == [0]
        assert loop.run_until_complete(asyncio.wait_for(w.terminate(), 5)) == 0
        assert got == [0, 1, 2]


def test_an_exit_signal_from_a_global_call_keeps_the_hold_of_a_running_async_callback():
    """A global-call host method raising SystemExit leaves the host loop while an async host callback
    holds the delivery; run again, the later messages still wait for that callback to finish."""
    log: list[str] = []

    class Host:
        def stop(self):
            raise SystemExit

    def script(port):
        def on_message(e):
            port.post_message(0)
            with contextlib.suppress(BaseException):  # SystemExit comes back here: it is not the worker's
                port.call_global_call_object_method("host", "stop", 5000)
            port.post_message(1)

        port.onmessage = on_message

    with _own_loop() as (loop, workers):
        release = loop.create_future()

        async def on_message(e):
            log.append(f"start {e.data}")
            if e.data == 0:
                await release
            log.append(f"end {e.data}")

        w = loop.run_until_complete(_start(workers, script, on_message))
        w.register_global_call_object("host", Host())
        w.post_message("go")
        with pytest.raises(SystemExit):
            loop.run_until_complete(asyncio.wait_for(w.wait(), 5))
        loop.call_later(0.05, release.set_result, None)
        assert loop.run_until_complete(asyncio.wait_for(w.terminate(), 5)) == 0
        assert log == ["start 0", "end 0", "start 1", "end 1"]


@contextlib.contextmanager
def _own_loop() -> Iterator[tuple[asyncio.AbstractEventLoop, list[ThreadWorker]]]:
    """A loop the test runs by hand, and the workers started on it, terminated even if the test fails."""
    loop = asyncio.new_event_loop()
    workers: list[ThreadWorker] = []
    try:
        yield loop, workers
    finally:
        for w in workers:
            with contextlib.suppress(BaseException):
                loop.run_until_complete(asyncio.wait_for(w.terminate(), 5))
        loop.close()


async def _start(workers, script, on_message):
    # The handler is set in the step that makes the worker, before the loop can dispatch anything.
    w = ThreadWorker(script)
    w.onmessage = on_message
    workers.append(w)
    return w
