"""The public surface: what `arkworker` exports, and the one module that crosses threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import inspect
import pathlib
import re
import threading
import uuid

import pytest

import arkworker

PACKAGE = pathlib.Path(arkworker.__file__).parent

SPEC_NAMES = {
    "AsyncLock",
    "ErrorEvent",
    "Event",
    "GlobalCallMethodNotCallableError",
    "GlobalCallObjectNotRegisteredError",
    "GlobalCallTimeoutError",
    "InvalidScriptError",
    "MessageEvent",
    "NotInWorkerError",
    "ParameterError",
    "SerializationError",
    "ThreadWorker",
    "ThreadWorkerGlobalScope",
    "ThreadWorkerPriority",
    "WorkerCrashedError",
    "WorkerError",
    "WorkerInitializationError",
    "WorkerNotRunningError",
    "WorkerState",
    "WorkerStatistics",
    "sendable",
    "set_max_workers",
    "worker_port",
}


def test_all_lists_exactly_the_public_names():
    """`__all__` is sorted, holds every name SPEC.md names, and every public attribute is in it."""
    assert list(arkworker.__all__) == sorted(arkworker.__all__)
    assert set(arkworker.__all__) >= SPEC_NAMES
    public = {
        name
        for name, value in vars(arkworker).items()
        if not name.startswith(("_", "@")) and not inspect.ismodule(value)
    }
    # worker_port comes from the module's __getattr__: in a worker thread it is that worker's port.
    assert public | {"worker_port"} == set(arkworker.__all__)
    assert "worker_port" in dir(arkworker)


def test_exported_classes_and_functions_report_the_package():
    """Reprs and tracebacks show `arkworker.X`, not the private module that defines X."""
    for name in arkworker.__all__:
        obj = getattr(arkworker, name)
        if isinstance(obj, type) or (callable(obj) and hasattr(obj, "__qualname__")):
            assert obj.__module__ == "arkworker", name


def test_arkts_spelling_reads_naturally():
    """`import arkworker as worker` gives `worker.ThreadWorker` and `worker.worker_port`."""
    import arkworker as worker

    assert worker.ThreadWorker is arkworker.ThreadWorker
    assert worker.worker_port is arkworker.worker_port


def test_version_comes_from_package_metadata():
    """`arkworker.__version__` is the installed distribution's version."""
    from importlib.metadata import version

    assert arkworker.__version__ == version("arkworker")


def test_only_the_transport_module_crosses_threads():
    """Scheduling on another thread's loop, or waiting for another thread, happens in `_transport.py` alone."""
    crossing = re.compile(
        r"call_soon_threadsafe|run_coroutine_threadsafe|threading\.(Event|Condition|Thread)\b"
    )
    offenders = [
        path.name
        for path in PACKAGE.glob("_*.py")  # the runtime; the pytest plugin only inspects threads
        if path.name != "_transport.py" and crossing.search(path.read_text())
    ]
    assert offenders == []


async def test_worker_port_in_a_worker_is_that_workers_port():
    """In a worker thread `arkworker.worker_port` is that worker's ThreadWorkerGlobalScope itself."""
    seen: dict[str, object] = {}

    def script(port):
        from arkworker import worker_port  # imported in the worker thread: the port itself

        seen["imported"] = worker_port
        seen["attribute"] = arkworker.worker_port
        seen["port"] = port
        seen["self"] = port.self
        port.onmessage = lambda e: arkworker.worker_port is port

    async with arkworker.ThreadWorker(script) as w:
        assert await w.request("same port in a handler?") is True
    assert seen["imported"] is seen["port"]
    assert seen["attribute"] is seen["port"]
    assert isinstance(seen["attribute"], arkworker.ThreadWorkerGlobalScope)
    assert seen["self"] is seen["port"]


async def test_worker_port_bound_on_the_host_is_a_port_in_the_worker():
    """`from arkworker import worker_port` at the top of a module imported on the host (this one) binds a
    stand-in that is the current worker's port on each use: in a worker it is a ThreadWorkerGlobalScope,
    its `self` is the port itself, and on the host it is no port."""
    from arkworker import worker_port

    def script(port):
        port.onmessage = lambda e: (
            isinstance(worker_port, arkworker.ThreadWorkerGlobalScope),
            worker_port.self is port,
            worker_port.name,
        )

    async with arkworker.ThreadWorker(script, name="bound-early") as w:
        assert await w.request(None) == (True, True, "bound-early")
    assert not isinstance(worker_port, arkworker.ThreadWorkerGlobalScope)


PORT_USES = {
    "name": lambda port: port.name,
    "self": lambda port: port.self,
    "set onmessage": lambda port: setattr(port, "onmessage", print),
    "on": lambda port: port.on("message", print),
    "off": lambda port: port.off("message"),
    "dispatch_event": lambda port: port.dispatch_event(arkworker.Event("message")),
    "messages": lambda port: port.messages(),
    "post_message": lambda port: port.post_message("x"),
    "close": lambda port: port.close(),
}


@pytest.mark.parametrize("use", PORT_USES.values(), ids=PORT_USES.keys())
async def test_a_port_used_off_its_workers_thread_raises_not_in_worker_error(use):
    """The port itself (what `from arkworker import worker_port` binds in a script) used from a thread the
    worker started, or from the host after the exit, raises NotInWorkerError saying so."""
    outcome: list[BaseException | None] = []

    def script(port):
        def elsewhere():
            try:
                use(port)
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
        seen["port"] = port
        port.onmessage = lambda e: e.data

    seen: dict[str, object] = {}
    async with arkworker.ThreadWorker(script) as w:
        assert await w.request("still running?") == "still running?"
    with pytest.raises(arkworker.NotInWorkerError, match="only usable on that worker's thread"):
        use(seen["port"])
    assert len(outcome) == 1
    assert isinstance(outcome[0], arkworker.NotInWorkerError)


@pytest.fixture
def shared_helper(tmp_path, monkeypatch):
    """The name of a fresh module, importable by any worker, that imports `worker_port` at its top level:
    `notify(data)` posts data, `reply(data)` posts `(worker_port.name, data)`."""
    name = f"shared_helper_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(
        "from arkworker import worker_port\n\n\n"
        "def notify(data):\n    worker_port.post_message(data)\n\n\n"
        "def reply(data):\n    worker_port.post_message((worker_port.name, data))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


async def test_a_module_shared_by_workers_posts_through_each_workers_own_port(shared_helper):
    """A helper module that does `from arkworker import worker_port` at its top level, first imported in
    one worker, posts through the port of whichever worker calls it, even after the first one exited."""
    helper = shared_helper

    def script(port):
        module = importlib.import_module(helper)
        port.onmessage = lambda e: module.reply(e.data)

    a = arkworker.ThreadWorker(script, name="a")
    b = arkworker.ThreadWorker(script, name="b")
    try:
        await a.post_message("to a")
        assert await asyncio.wait_for(anext(aiter(a.messages())), 5) == ("a", "to a")
        await b.post_message("to b")
        assert await asyncio.wait_for(anext(aiter(b.messages())), 5) == ("b", "to b")
        assert await asyncio.wait_for(a.terminate(), 5) == 0
        await b.post_message("to b, a gone")
        assert await asyncio.wait_for(anext(aiter(b.messages())), 5) == ("b", "to b, a gone")
    finally:
        await asyncio.wait_for(asyncio.gather(a.terminate(), b.terminate()), 5)
    assert a.statistics().messages_received == 1
    assert b.statistics().messages_received == 2


async def test_a_workers_port_used_from_another_thread_raises_not_in_worker_error():
    """The port itself, used from a thread the worker started, raises NotInWorkerError for posts, global
    calls and close() (SPEC: anywhere else using it raises), and the worker goes on as before."""

    def script(port):
        def from_a_thread():
            outcome = []
            global_call = lambda: port.call_global_call_object_method("obj", "method", 5000)  # noqa: E731
            for call in (lambda: port.post_message("x"), global_call, port.close):
                try:
                    call()
                    outcome.append("no error")
                except arkworker.NotInWorkerError:
                    outcome.append("NotInWorkerError")
            return outcome

        async def on_message(e):
            return await asyncio.to_thread(from_a_thread)

        port.onmessage = on_message

    async with arkworker.ThreadWorker(script) as w:
        assert await asyncio.wait_for(w.request("go"), 5) == ["NotInWorkerError"] * 3
        assert w.state is arkworker.WorkerState.RUNNING
        assert await asyncio.wait_for(w.request("again"), 5) == ["NotInWorkerError"] * 3
    assert w.exit_code == 0


async def test_a_global_call_from_the_host_thread_raises_not_in_worker_error_at_once():
    """A worker's port used on the host thread for a global call raises NotInWorkerError at once: it
    would block the very loop that must answer it, then time out."""
    ports: list = []

    def script(port):
        ports.append(port)
        port.onmessage = lambda e: e.data

    async with arkworker.ThreadWorker(script) as w:
        w.register_global_call_object("obj", object())
        assert await asyncio.wait_for(w.request("started"), 5) == "started"
        with pytest.raises(arkworker.NotInWorkerError):
            ports[0].call_global_call_object_method("obj", "__repr__", 5000)
        assert w.state is arkworker.WorkerState.RUNNING
    assert w.exit_code == 0


async def test_worker_port_still_works_in_the_exits_last_pass(shared_helper):
    """Callbacks that the last handler schedules still run at the exit, on the worker's thread: there
    `arkworker.worker_port`, and a shared helper's `worker_port`, still post to the host."""
    helper = shared_helper

    def script(port):
        module = importlib.import_module(helper)

        def on_message(e):
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            future.add_done_callback(
                lambda f: (module.notify("helper"), arkworker.worker_port.post_message("port"))
            )
            loop.call_soon(future.set_result, None)  # runs after terminate(): in the exit's last passes

        port.onmessage = on_message

    w = arkworker.ThreadWorker(script)
    got: list[object] = []
    w.onmessage = lambda e: got.append(e.data)
    w.post_message("last")
    assert await asyncio.wait_for(w.terminate(), 5) == 0
    assert got == ["helper", "port"]


async def test_the_port_of_an_ended_worker_is_usable_from_no_thread():
    """Once its worker has ended, a port kept by someone raises NotInWorkerError on any thread, also on a
    new thread that happens to get the ended thread's ident (the OS reuses them)."""
    ports: list = []
    w = arkworker.ThreadWorker(ports.append)
    assert await asyncio.wait_for(w.terminate(), 5) == 0
    outcome: list[str] = []

    def use():
        try:
            ports[0].post_message("lost?")
            outcome.append("no error")
        except arkworker.NotInWorkerError:
            outcome.append("NotInWorkerError")

    thread = threading.Thread(target=use)
    thread.start()
    thread.join(5)
    assert outcome == ["NotInWorkerError"]


async def test_a_request_coroutine_built_on_another_thread_does_not_speak_for_a_host_callback():
    """`run_coroutine_threadsafe(w.request(x), loop)` builds the request on another thread: whatever task
    the host loop runs at that moment (an async host callback holding the delivery, say) did not ask for
    it, so the callbacks stay in order, and the answer comes after them."""
    log: list[str] = []
    loop = asyncio.get_running_loop()
    both_done = asyncio.Event()
    submitted: list[concurrent.futures.Future[object]] = []

    def script(port):
        port.onmessage = lambda e: e.data
        port.post_message("m1")
        port.post_message("m2")

    w = arkworker.ThreadWorker(script)
    running = asyncio.Event()

    def ask_from_a_thread():
        request = w.request("q")  # built here, while the host loop runs the callback below

        async def ask():
            running.set()
            return await request  # sends it: its answer queues behind the callback

        submitted.append(asyncio.run_coroutine_threadsafe(ask(), loop))

    async def on_message(e):
        log.append(f"start {e.data}")
        if e.data == "m1":
            thread = threading.Thread(target=ask_from_a_thread)
            thread.start()
            thread.join(5)  # blocks the host loop: this callback's task is the one running meanwhile
            await running.wait()
            for _ in range(5):
                await asyncio.sleep(0)  # room for m2 to be dispatched, if this callback let go
        log.append(f"end {e.data}")
        if e.data == "m2":
            both_done.set()

    w.onmessage = on_message
    await asyncio.wait_for(both_done.wait(), 5)
    assert await asyncio.wait_for(asyncio.wrap_future(submitted[0]), 5) == "q"
    assert log == ["start m1", "end m1", "start m2", "end m2"]
    await asyncio.wait_for(w.terminate(), 5)
