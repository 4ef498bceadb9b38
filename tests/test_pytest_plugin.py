"""The pytest plugin (``arkworker.pytest_plugin``), exercised through inner pytest runs."""

from __future__ import annotations

import threading

import pytest

from arkworker import WorkerState
from arkworker.pytest_plugin import WorkerFactory

pytest_plugins = ["pytester"]

# Worker scripts (callables) and a thread probe shared by the inner test modules.
HEADER = """
import threading

import pytest
import pytest_asyncio


def doubler(port):
    port.onmessage = lambda e: e.data * 2


def echo(port):
    port.onmessage = lambda e: port.post_message(e.data)


def raiser(port):
    def on_message(e):
        raise ValueError("boom from worker")

    port.onmessage = on_message


def worker_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("arkworker-")]
"""


@pytest.fixture(autouse=True)
def _no_autoload(monkeypatch):
    """Inner runs load only the plugins they name: hermetic, and quick without unrelated plugins."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def run(pytester: pytest.Pytester, body: str, *args: str, plugin: bool = True) -> pytest.RunResult:
    """Write ``body`` (after HEADER) as an inner test module and run it in a subprocess, strict mode."""
    pytester.makepyfile(test_inner=HEADER + body)
    plugins = ("-p", "asyncio", "-p", "arkworker") if plugin else ("-p", "asyncio")
    return pytester.runpytest_subprocess(
        *plugins, "--asyncio-mode=strict", "-o", "asyncio_default_fixture_loop_scope=function", "-W", "error",
        *args,
    )  # fmt: skip


def test_entry_point_autoloads(pytester, monkeypatch):
    """With plugin autoloading on, the pytest11 entry point provides the fixture and the marker."""
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    pytester.makepyfile(
        test_inner="""
import pytest


@pytest.mark.asyncio
@pytest.mark.arkworker_allow_running
async def test_it(arkworker_factory):
    assert arkworker_factory(lambda port: None).name is None
"""
    )
    result = pytester.runpytest_subprocess(
        "--asyncio-mode=strict", "--strict-markers", "-o", "asyncio_default_fixture_loop_scope=function"
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["plugins:*arkworker-*"])


def test_terminated_worker_passes(pytester):
    """A test that creates a worker through the fixture and terminates it passes."""
    result = run(
        pytester,
        """
@pytest.mark.asyncio
async def test_echo(arkworker_factory):
    w = arkworker_factory(echo, name="tidy")
    await w.post_message("hi")
    async for data in w.messages():
        assert data == "hi"
        break
    assert await w.terminate() == 0
    assert arkworker_factory.workers == [w]
""",
    )
    result.assert_outcomes(passed=1)


def test_worker_left_running_fails_and_is_cleaned_up(pytester):
    """A worker left running fails its test with a message naming it, and its thread still ends."""
    result = run(
        pytester,
        """
@pytest.mark.asyncio
async def test_leaves_it(arkworker_factory):
    w = arkworker_factory(doubler, name="leaky")
    assert await w.request(1) == 2


def test_thread_is_gone():
    assert worker_threads() == []
""",
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*arkworker: worker <ThreadWorker 'leaky' RUNNING> was left running*"])


def test_allow_running_marker(pytester):
    """``arkworker_allow_running`` lets a test leave a worker running; it is still terminated."""
    result = run(
        pytester,
        """
@pytest.mark.asyncio
@pytest.mark.arkworker_allow_running
async def test_leaves_it(arkworker_factory):
    assert await arkworker_factory(doubler, name="allowed").request(2) == 4


def test_thread_is_gone():
    assert worker_threads() == []
""",
        "--strict-markers",
    )
    result.assert_outcomes(passed=2)


def test_unhandled_worker_error_fails(pytester):
    """A worker error with no onerror fails the test, unless the test clears the recorded errors."""
    result = run(
        pytester,
        """
@pytest.mark.asyncio
async def test_crash(arkworker_factory):
    w = arkworker_factory(raiser, name="crasher")
    w.post_message("x")
    assert await w.wait() == 1


@pytest.mark.asyncio
async def test_expected_crash(arkworker_factory):
    w = arkworker_factory(raiser, name="expected")
    w.post_message("x")
    assert await w.wait() == 1
    assert [type(c["exception"]) for c in arkworker_factory.errors] == [ValueError]
    arkworker_factory.errors.clear()
""",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*unhandled: unhandled error in worker 'crasher'*", "*ValueError: boom from worker"]
    )
    result.stdout.no_fnmatch_line("*worker 'expected'*")


def test_host_callback_exception_fails(pytester):
    """An exception raised by a host onmessage callback fails the test."""
    result = run(
        pytester,
        """
@pytest.mark.asyncio
async def test_callback_raises(arkworker_factory):
    w = arkworker_factory(echo, name="host-cb")

    def on_message(e):
        raise RuntimeError("host callback failed")

    w.onmessage = on_message
    await w.post_message("x")
    assert await w.terminate() == 0  # the reply is dispatched before the exit
""",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*unhandled: exception in a callback of worker 'host-cb'*", "*RuntimeError: host callback failed"]
    )


def test_coexists_with_pytest_asyncio_strict(pytester):
    """Strict-mode tests and fixtures run beside the plugin, which never takes an unmarked coroutine test."""
    body = """
@pytest_asyncio.fixture
async def doubled(arkworker_factory):
    w = arkworker_factory(doubler, name="from-fixture")
    yield await w.request(5)
    await w.terminate()


@pytest.mark.asyncio
async def test_marked(doubled, arkworker_factory):
    assert doubled == 10
    assert [w.name for w in arkworker_factory.workers] == ["from-fixture"]


def test_sync():
    assert worker_threads() == []


async def test_unmarked():
    pass
"""
    with_plugin = run(pytester, body)
    with_plugin.assert_outcomes(passed=2, failed=1)
    with_plugin.stdout.fnmatch_lines(["FAILED *test_unmarked*"])
    # The unmarked coroutine test fares exactly as it does without the plugin.
    unmarked = ("-k", "test_unmarked or test_sync")
    assert (
        run(pytester, body, *unmarked).parseoutcomes()
        == run(pytester, body, *unmarked, plugin=False).parseoutcomes()
    )


def test_stuck_worker_fails_as_not_exited_and_leaked(pytester):
    """A worker that does not exit within the teardown timeout fails the test as not exited and leaked."""
    result = run(
        pytester,
        """
import asyncio

import arkworker.pytest_plugin

arkworker.pytest_plugin.TERMINATE_TIMEOUT = 0.5
started, release = threading.Event(), threading.Event()


def stuck(port):
    def on_message(e):
        started.set()
        release.wait(30)

    port.onmessage = on_message


@pytest.mark.asyncio
async def test_stuck(arkworker_factory):
    w = arkworker_factory(stuck, name="stuck")
    w.post_message("block")
    assert await asyncio.to_thread(started.wait, 10)
    w.terminate()


def test_release():
    release.set()
    for thread in threading.enumerate():
        if thread.name == "arkworker-stuck":
            thread.join(10)
    assert worker_threads() == []


def test_factory_needs_the_test_loop(arkworker_factory):
    with pytest.raises(RuntimeError, match="on the loop of the test"):
        arkworker_factory(stuck)
""",
    )
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*arkworker: worker <ThreadWorker 'stuck' TERMINATING> did not exit within 0.5 s",
            "worker thread 'arkworker-stuck' leaked: still alive after teardown",
        ]
    )


def test_request_through_fixture(pytester):
    """request() on a worker created through the fixture returns the handler's value, options forwarded."""
    result = run(
        pytester,
        """
import arkworker


@pytest.mark.asyncio
async def test_request(arkworker_factory):
    w = arkworker_factory(doubler, name="req", priority=arkworker.ThreadWorkerPriority.LOW, max_inbox=4)
    assert await w.request(21) == 42
    assert "arkworker-req" in worker_threads()
    assert await w.terminate() == 0
""",
    )
    result.assert_outcomes(passed=1)


async def test_fixture_in_this_suite(arkworker_factory: WorkerFactory, scripts):
    """The fixture also works in this suite's own auto mode, on the test's loop."""
    w = arkworker_factory(str(scripts / "echo.py"), name="outer")
    assert await w.request("x") == ("echo", "x")
    assert await w.terminate() == 0
    assert w.state is WorkerState.TERMINATED
    assert "arkworker-outer" not in [t.name for t in threading.enumerate()]
