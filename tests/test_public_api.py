"""The public surface: what `arkworker` exports, and the one module that crosses threads."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pathlib
import re
import uuid

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
        port.onmessage = lambda e: arkworker.worker_port is port

    async with arkworker.ThreadWorker(script) as w:
        assert await w.request("same port in a handler?") is True
    assert seen["imported"] is seen["port"]
    assert seen["attribute"] is seen["port"]
    assert isinstance(seen["attribute"], arkworker.ThreadWorkerGlobalScope)
    assert seen["port"].self is seen["port"]  # type: ignore[attr-defined]


async def test_a_module_shared_by_workers_posts_through_each_workers_own_port(tmp_path, monkeypatch):
    """A helper module that does `from arkworker import worker_port` at its top level, first imported in
    one worker, posts through the port of whichever worker calls it, even after the first one exited."""
    helper = f"shared_helper_{uuid.uuid4().hex}"
    (tmp_path / f"{helper}.py").write_text(
        "from arkworker import worker_port\n\n\ndef reply(data):\n    worker_port.post_message((worker_port.name, data))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

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
    """The port itself, used from a thread the worker started, raises NotInWorkerError for posts and
    close() (SPEC: anywhere else using it raises), and the worker goes on as before."""

    def script(port):
        def from_a_thread():
            outcome = []
            for call in (lambda: port.post_message("x"), port.close):
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
        assert await asyncio.wait_for(w.request("go"), 5) == ["NotInWorkerError", "NotInWorkerError"]
        assert w.state is arkworker.WorkerState.RUNNING
        assert await asyncio.wait_for(w.request("again"), 5) == ["NotInWorkerError", "NotInWorkerError"]
    assert w.exit_code == 0
