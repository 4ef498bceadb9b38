"""The public surface: what `arkworker` exports, and the one module that crosses threads."""

from __future__ import annotations

import inspect
import pathlib
import re

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
