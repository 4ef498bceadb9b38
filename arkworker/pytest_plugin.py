"""pytest plugin: create workers in tests and fail any test that leaves one running or an error unhandled.

Installed with arkworker and loaded through the ``pytest11`` entry point ``arkworker`` (disable it with
``-p no:arkworker``); no ini option is needed. It runs no test itself: pytest-asyncio runs coroutine tests
and fixtures, in ``strict`` or ``auto`` mode alike.

``arkworker_factory``
    An async fixture (``pytest_asyncio.fixture``, ``loop_scope="function"``): it runs on the test's event
    loop, so use it from async tests on that loop. It yields a :class:`WorkerFactory`;
    ``arkworker_factory(script, name=..., ...)`` takes every ``ThreadWorker`` argument and returns a worker
    bound to that loop. While the fixture is active, the loop's exception handler records every context
    that carries a ``"worker"`` key or an exception (callback exceptions, unhandled worker errors) in
    ``arkworker_factory.errors``, and passes anything else to the previous handler. The test fails if an
    error was recorded by the time its function returns. At teardown (after the fixtures that use this
    one) it terminates every worker it created, waits at most ``TERMINATE_TIMEOUT`` seconds for their
    exit, and fails the test's teardown if a worker was still running (it is terminated all the same),
    did not exit, left an ``arkworker-*`` thread alive, or an error was recorded since. Clear ``errors``
    in a test that expects them.

``@pytest.mark.arkworker_allow_running``
    Workers this test leaves running are terminated at teardown without failing it.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any, TypedDict, Unpack

import pytest

from ._events import ThreadWorkerPriority, WorkerState
from ._port import ThreadWorkerGlobalScope
from ._worker import LoopFactory, ThreadWorker

__all__ = (
    "TERMINATE_TIMEOUT",
    "WorkerFactory",
    "arkworker_factory",
    "pytest_configure",
    "pytest_runtest_call",
)

TERMINATE_TIMEOUT = 10.0
"""Seconds the teardown waits for the workers to exit (and their threads to end) before failing."""

_ALLOW_RUNNING = "arkworker_allow_running"
_Handler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None


class _Options(TypedDict, total=False):
    name: str | None
    priority: ThreadWorkerPriority | None
    loop_factory: LoopFactory | str | None
    max_inbox: int
    clone: bool
    max_message_size: int


class WorkerFactory:
    """What ``arkworker_factory`` yields: call it to create a worker on the test's loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.workers: list[ThreadWorker] = []
        """Every worker created through this factory, in order."""
        self.errors: list[dict[str, Any]] = []
        """Exception-handler contexts recorded so far; the test fails unless this is empty."""

    def __call__(
        self,
        script: str | os.PathLike[str] | Callable[[ThreadWorkerGlobalScope], Any],
        **options: Unpack[_Options],
    ) -> ThreadWorker:
        """``ThreadWorker(script, **options)``, created on the test's loop and recorded for teardown."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not self.loop:
            raise RuntimeError("arkworker_factory must be called on the loop of the test that requested it")
        worker = ThreadWorker(script, **options)
        self.workers.append(worker)
        return worker

    def _record(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any], chain: _Handler) -> None:
        if "worker" in context or context.get("exception") is not None:
            self.errors.append(context)
        elif chain is not None:
            chain(loop, context)
        else:
            loop.default_exception_handler(context)

    def _take_errors(self) -> list[str]:
        """The errors recorded so far, each reported once."""
        problems = [f"unhandled: {_describe(context)}" for context in self.errors]
        self.errors.clear()
        return problems

    async def _close(self, allow_running: bool) -> list[str]:
        """Terminate every worker and wait for its exit; return what went wrong."""
        problems = [
            f"worker {worker!r} was left running (terminated at teardown)"
            for worker in self.workers
            if worker.state < WorkerState.TERMINATING and not allow_running
        ]
        exits = {worker.terminate(): worker for worker in self.workers}
        if exits:
            _, stuck = await asyncio.wait(list(exits), timeout=TERMINATE_TIMEOUT)
            problems += [f"worker {exits[f]!r} did not exit within {TERMINATE_TIMEOUT} s" for f in stuck]
        return problems


def _worker_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("arkworker-")}


def _describe(context: dict[str, Any]) -> str:
    exc = context.get("exception")
    text = str(context.get("message", "unhandled exception"))
    if isinstance(exc, BaseException):
        text += "\n" + "".join(traceback.format_exception(exc)).rstrip()
    return text


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``arkworker_allow_running`` marker (so ``--strict-markers`` accepts it)."""
    config.addinivalue_line(
        "markers", f"{_ALLOW_RUNNING}: workers left running are terminated at teardown without failing"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Fail the test itself, not its teardown, for the errors its workers left unhandled by the time its
    function returned. (Whether a worker is left running is known only at teardown: a fixture that uses
    ``arkworker_factory`` may terminate its worker in its own teardown.)"""
    yield
    factory = getattr(item, "funcargs", {}).get("arkworker_factory")
    if isinstance(factory, WorkerFactory):
        problems = factory._take_errors()
        if problems:
            pytest.fail("arkworker: " + "\n".join(problems), pytrace=False)


def _async_fixture(fn: Callable[..., AsyncIterator[WorkerFactory]]) -> Any:
    # Without pytest-asyncio, pytest itself reports the async fixture as unhandled when a test asks for it.
    try:
        import pytest_asyncio  # noqa: PLC0415 - optional: importing the plugin must not need it
    except ImportError:  # pragma: no cover
        return pytest.fixture(fn)
    return pytest_asyncio.fixture(fn, loop_scope="function")


@_async_fixture
async def arkworker_factory(request: pytest.FixtureRequest) -> AsyncIterator[WorkerFactory]:
    """Create workers on the test's loop; fail the test if one is left running or an error went unhandled.

    An async fixture on the test's function-scoped event loop (pytest-asyncio); the module docstring
    of ``arkworker.pytest_plugin`` has the details.
    """
    loop = asyncio.get_running_loop()
    factory = WorkerFactory(loop)
    threads_before = _worker_threads()
    previous: _Handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda lp, ctx: factory._record(lp, ctx, previous))
    try:
        yield factory
        deadline = time.monotonic() + TERMINATE_TIMEOUT
        problems = await factory._close(request.node.get_closest_marker(_ALLOW_RUNNING) is not None)
        for thread in _worker_threads() - threads_before:
            await asyncio.to_thread(thread.join, max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                problems.append(f"worker thread {thread.name!r} leaked: still alive after teardown")
    finally:
        loop.set_exception_handler(previous)
    problems += factory._take_errors()
    if problems:
        pytest.fail("arkworker: " + "\n".join(problems), pytrace=False)
