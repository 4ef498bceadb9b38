"""Section 2: constructor options (name, priority, loop_factory) and how a script runs in its worker."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import sys
import threading
from typing import Any

import pytest
import uvloop

from arkworker import ParameterError, ThreadWorker, ThreadWorkerPriority, WorkerInitializationError
from arkworker._transport import doorbell

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="per-thread names and nice are Linux"
)


async def probe(scripts, **options: Any) -> dict[str, Any]:
    """Start a worker running lim_probe.py with ``options`` and return what it reports about its thread."""
    async with ThreadWorker(scripts / "lim_probe.py", **options) as w:
        async with asyncio.timeout(10):
            return await w.request("probe")


def host_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


# -- name ----------------------------------------------------------------------------------------------


async def test_name_is_the_ports_name_and_the_thread_name(scripts):
    """name= is worker_port.name inside the worker and the Python thread name is arkworker-<name>."""
    facts = await probe(scripts, name="resizer")
    assert facts["port_name"] == "resizer"
    assert facts["thread_name"] == "arkworker-resizer"


async def test_unnamed_worker(scripts):
    """Without name=, worker_port.name is None and the thread name still starts with arkworker-."""
    facts = await probe(scripts)
    assert facts["port_name"] is None
    assert facts["thread_name"].startswith("arkworker-")


@linux_only
@pytest.mark.parametrize("name", ["short", "exactly-15-byte", "a-rather-long-worker-name"])
async def test_os_thread_name_is_the_name_truncated_to_15_bytes(scripts, name):
    """On Linux the OS thread name (/proc/.../comm) is the worker's name cut to 15 bytes."""
    facts = await probe(scripts, name=name)
    assert facts["comm"] == name.encode()[:15].decode()


@linux_only
async def test_os_thread_name_of_a_non_ascii_name_is_a_prefix_within_15_bytes(scripts):
    """A non-ASCII name is still applied to the OS thread, cut to at most 15 bytes."""
    name = "wörker-ünïcode-name"
    facts = await probe(scripts, name=name)
    comm = facts["comm"]
    assert len(comm.encode()) <= 15
    assert len(comm) >= 10
    assert name.startswith(comm)


@pytest.mark.parametrize("bad", [42, b"bytes", ["x"]])
async def test_name_must_be_a_str(scripts, bad):
    """A name that is not a str is a ParameterError."""
    with pytest.raises(ParameterError):
        ThreadWorker(scripts / "lim_probe.py", name=bad)


# -- priority ------------------------------------------------------------------------------------------


@linux_only
@pytest.mark.parametrize("priority", [ThreadWorkerPriority.LOW, ThreadWorkerPriority.IDLE])
async def test_low_priorities_raise_the_threads_nice(scripts, priority):
    """LOW and IDLE give the worker thread a higher nice value than the thread that created it."""
    creator = host_nice()
    if creator >= 19:
        pytest.skip("the creating thread is already at nice 19")
    facts = await probe(scripts, priority=priority)
    assert facts["nice"] > creator


@linux_only
async def test_idle_is_weaker_than_low(scripts):
    """IDLE leaves the worker thread at least as nice as LOW does."""
    if host_nice() >= 19:
        pytest.skip("the creating thread is already at nice 19")
    low = await probe(scripts, priority=ThreadWorkerPriority.LOW)
    idle = await probe(scripts, priority=ThreadWorkerPriority.IDLE)
    assert idle["nice"] >= low["nice"]


@linux_only
async def test_no_priority_keeps_the_creators_nice(scripts):
    """Without priority= the worker thread runs at its creator's nice value."""
    assert (await probe(scripts))["nice"] == host_nice()


@linux_only
@pytest.mark.parametrize(
    "priority",
    [
        ThreadWorkerPriority.HIGH,
        ThreadWorkerPriority.DEADLINE,
        ThreadWorkerPriority.VIP,
        ThreadWorkerPriority.MEDIUM,
    ],
)
async def test_other_priorities_start_and_never_raise_the_nice(scripts, priority):
    """HIGH, DEADLINE, VIP and MEDIUM start a working worker that is never nicer than its creator."""
    facts = await probe(scripts, priority=priority)
    assert facts["nice"] <= host_nice()


@pytest.mark.parametrize("bad", ["LOW", 99, -1, 2.0, True, object()])
async def test_invalid_priority_is_a_parameter_error(scripts, bad):
    """A priority that is not a ThreadWorkerPriority raises ParameterError and starts no thread."""
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(ParameterError) as info:
        ThreadWorker(scripts / "lim_probe.py", priority=bad)
    assert info.value.code == 401
    assert {t.name for t in threading.enumerate()} == before


# -- loop_factory --------------------------------------------------------------------------------------


async def test_default_worker_loop_is_asyncio(scripts):
    """By default the worker runs on a plain asyncio event loop, not uvloop."""
    loop_type = (await probe(scripts))["loop_type"]
    assert issubclass(loop_type, asyncio.BaseEventLoop)
    assert not issubclass(loop_type, uvloop.Loop)


@pytest.mark.parametrize("factory", ["uvloop", uvloop.new_event_loop], ids=["string", "callable"])
async def test_uvloop_worker_loop(scripts, factory):
    """loop_factory="uvloop" or uvloop.new_event_loop makes the worker's running loop a uvloop loop."""
    assert issubclass((await probe(scripts, loop_factory=factory))["loop_type"], uvloop.Loop)


async def test_custom_loop_factory_is_used(scripts):
    """Any callable loop_factory builds the worker's loop."""
    made: list[asyncio.AbstractEventLoop] = []

    def factory() -> asyncio.AbstractEventLoop:
        made.append(asyncio.new_event_loop())
        return made[-1]

    facts = await probe(scripts, loop_factory=factory)
    assert len(made) == 1
    assert facts["loop_type"] is type(made[0])


def calls_in_from_threads(port: Any) -> None:
    """Answers {"threads": t, "calls": c} once t plain threads have each made c call_soon_threadsafe calls
    into the worker's loop at once, with the calls run per thread and asyncio.to_thread's answer."""

    async def on_message(e: Any) -> tuple[dict[int, list[int]], int]:
        loop = asyncio.get_running_loop()
        threads, calls = e.data["threads"], e.data["calls"]
        ran: dict[int, list[int]] = {t: [] for t in range(threads)}
        all_ran = loop.create_future()

        def one(t: int, i: int) -> None:
            ran[t].append(i)
            if sum(map(len, ran.values())) == threads * calls:
                all_ran.set_result(None)

        def call_in(t: int) -> None:
            for i in range(calls):
                loop.call_soon_threadsafe(one, t, i)

        callers = [threading.Thread(target=call_in, args=(t,)) for t in range(threads)]
        for caller in callers:
            caller.start()
        async with asyncio.timeout(10):
            await all_ran  # the loop sleeps in select between calls: each must wake it
        for caller in callers:
            caller.join()
        return ran, await asyncio.to_thread(sum, [1, 2, 3])

    port.onmessage = on_message


async def test_the_default_worker_loop_is_woken_by_every_thread_that_calls_into_it():
    """The default worker loop's call_soon_threadsafe rings its doorbell, once until the loop reads it back:
    no call from four threads at once is lost or reordered, and asyncio.to_thread returns."""
    async with ThreadWorker(calls_in_from_threads) as w:
        async with asyncio.timeout(20):
            ran, total = await w.request({"threads": 4, "calls": 5000})
    assert ran == {t: list(range(5000)) for t in range(4)}
    assert total == 6


@pytest.mark.skipif(
    not hasattr(os, "eventfd") or not os.path.isdir("/proc/self/fd"), reason="eventfds, /proc/self/fd"
)
async def test_the_default_worker_loop_holds_two_descriptors_and_frees_them():
    """A worker's default loop holds its epoll descriptor and one eventfd, its doorbell and self-pipe in one
    (asyncio's own loop adds a socket pair); both are closed once the worker has exited."""
    async with ThreadWorker(echo) as warm_up:  # the host loop's doorbell, made once
        await warm_up.request(0)
        before = len(os.listdir("/proc/self/fd"))
        w = ThreadWorker(echo)
        async with asyncio.timeout(10):
            assert await w.request(1) == 1
            assert len(os.listdir("/proc/self/fd")) - before == 2
            assert await w.terminate() == 0
        assert len(os.listdir("/proc/self/fd")) == before


class CountedLoop(asyncio.SelectorEventLoop):
    made = 0

    def __init__(self) -> None:
        super().__init__()
        CountedLoop.made += 1


@pytest.mark.parametrize("change", ["a uvloop policy", "a patched asyncio.new_event_loop"])
def test_the_default_worker_loop_is_what_asyncio_new_event_loop_makes(scripts, monkeypatch, change):
    """The default worker loop is asyncio.new_event_loop()'s: under a policy whose loops are uvloop's,
    uvloop's; with asyncio.new_event_loop replaced, what the replacement makes."""

    async def main() -> type:
        async with ThreadWorker(scripts / "lim_probe.py") as w:
            async with asyncio.timeout(10):
                return (await w.request("probe"))["loop_type"]

    if change == "a uvloop policy":
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        try:
            assert issubclass(asyncio.run(main()), uvloop.Loop)
        finally:
            asyncio.set_event_loop_policy(None)
    else:
        CountedLoop.made = 0
        with asyncio.Runner() as runner:  # its loop made before the patch
            monkeypatch.setattr(asyncio, "new_event_loop", CountedLoop)
            assert runner.run(main()) is CountedLoop
        assert CountedLoop.made == 1


@pytest.mark.parametrize("loop_factory", [None, asyncio.new_event_loop], ids=["default", "asyncio"])
async def test_a_worker_loop_refuses_signal_handlers_as_asyncio_does_off_the_main_thread(loop_factory):
    """Only the main thread's loop takes signals: a worker loop's add_signal_handler raises what asyncio's
    loop raises in any other thread (TypeError, ValueError for a bad argument, else RuntimeError), and the
    worker runs on."""

    async def a_coroutine_function() -> None:
        pass

    def try_signals(port: Any) -> None:
        def on_message(e: Any) -> list[str]:
            raised = []
            for sig, callback in [
                (signal.SIGUSR1, print),
                (signal.SIGUSR1, a_coroutine_function),
                (-1, print),
            ]:
                try:
                    asyncio.get_running_loop().add_signal_handler(sig, callback)
                except (RuntimeError, TypeError, ValueError) as exc:
                    raised.append(type(exc).__name__)
            return raised

        port.onmessage = on_message

    async with ThreadWorker(try_signals, loop_factory=loop_factory) as w:
        async with asyncio.timeout(10):
            assert await w.request(None) == ["RuntimeError", "TypeError", "ValueError"]
            assert await w.request(None) == ["RuntimeError", "TypeError", "ValueError"]


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
async def test_a_task_factory_the_loop_factory_set_makes_the_workers_tasks(loop_kind):
    """A task factory set by the loop_factory (asyncio.eager_task_factory, say) makes every task of the
    worker, the handler tasks of async handlers too, and the exit still cancels the worker's tasks."""
    made: list[str] = []
    cleaned_up = threading.Event()

    def recording_factory(loop: asyncio.AbstractEventLoop, coro: Any, **options: Any) -> asyncio.Task[Any]:
        made.append(coro.__qualname__.rsplit(".", 1)[-1])
        return asyncio.Task(coro, loop=loop, **options)

    def factory() -> asyncio.AbstractEventLoop:
        loop = uvloop.new_event_loop() if loop_kind == "uvloop" else asyncio.new_event_loop()
        loop.set_task_factory(recording_factory)
        return loop

    def script(port: Any) -> None:
        async def holds_a_resource() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                cleaned_up.set()

        async def on_message(e: Any) -> Any:
            return asyncio.get_running_loop().get_task_factory() is recording_factory

        asyncio.get_running_loop().create_task(holds_a_resource())
        port.onmessage = on_message

    async with ThreadWorker(script, loop_factory=factory) as w:
        assert await asyncio.wait_for(w.request("which factory?"), 10) is False  # the worker's, wrapping it
    assert cleaned_up.is_set()
    assert made[:2] == ["holds_a_resource", "on_message"]


async def test_failing_loop_factory_is_an_initialization_error(scripts):
    """A loop_factory that raises makes the constructor raise WorkerInitializationError and starts no thread."""

    def broken() -> asyncio.AbstractEventLoop:
        raise RuntimeError("no loop for you")

    before = {t.name for t in threading.enumerate()}
    with pytest.raises(WorkerInitializationError) as info:
        ThreadWorker(scripts / "lim_probe.py", loop_factory=broken)
    assert info.value.code == 10200003
    assert {t.name for t in threading.enumerate()} == before


@pytest.mark.parametrize("bad", [42, "asyncio-please"])
async def test_invalid_loop_factory_is_a_parameter_error(scripts, bad):
    """A loop_factory that is neither a callable nor "uvloop" is a ParameterError."""
    with pytest.raises(ParameterError):
        ThreadWorker(scripts / "lim_probe.py", loop_factory=bad)


@pytest.mark.parametrize("loop_factory", [None, "uvloop"], ids=["asyncio-worker", "uvloop-worker"])
def test_host_loop_on_uvloop(scripts, loop_factory):
    """A host running on uvloop can create, message, request and terminate workers."""

    async def main() -> tuple[object, object, object, int]:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        async with asyncio.timeout(10):
            async with ThreadWorker(scripts / "hello.py", loop_factory=loop_factory) as w:
                await w.post_message("hello world")
                reply = await anext(w.messages())
            echo = ThreadWorker(scripts / "echo.py", loop_factory=loop_factory)
            answer = await echo.request([1, 2])
            code = await echo.terminate()
            return reply, answer, w.exit_code, code

    assert uvloop.run(main()) == ("success", ("echo", [1, 2]), 0, 0)


class WatchesNoDescriptors(asyncio.SelectorEventLoop):
    """An event loop that cannot watch file descriptors, as a proactor loop cannot."""

    def add_reader(self, fd: Any, callback: Any, *args: Any) -> None:
        raise NotImplementedError


def no_descriptor_left(*args: Any) -> int:
    raise OSError(errno.EMFILE, "Too many open files")


def echo(port: Any) -> None:
    """Worker callable: post every message back and answer requests with the data."""

    def on_message(e: Any) -> object:
        port.post_message(e.data)
        return e.data

    port.onmessage = on_message


@pytest.mark.parametrize(
    "case", ["no eventfd", "no descriptor left", "the worker loop watches none", "the host loop watches none"]
)
def test_workers_wake_without_a_doorbell(monkeypatch, case):
    """Where no eventfd can wake a loop, call_soon_threadsafe does: messages still flow both ways in order,
    requests are answered, and the worker exits with 0."""
    if case == "no eventfd":
        monkeypatch.delattr(os, "eventfd", raising=False)
    elif case == "no descriptor left":
        monkeypatch.setattr(os, "eventfd", no_descriptor_left, raising=False)
    worker_loop = WatchesNoDescriptors if case == "the worker loop watches none" else None
    host_loop = WatchesNoDescriptors if case == "the host loop watches none" else asyncio.new_event_loop

    async def main() -> tuple[list[object], object, int]:
        got: list[object] = []
        async with asyncio.timeout(10):
            w = ThreadWorker(echo, loop_factory=worker_loop, max_inbox=16)
            w.onmessage = lambda e: got.append(e.data)
            for i in range(200):  # past max_inbox: the host waits for the worker, and is woken
                await w.post_message(i)
            answer = await w.request("last")  # its reply comes after the echoes, its own too
            return got, answer, await w.terminate()

    with asyncio.Runner(loop_factory=host_loop) as runner:
        assert runner.run(main()) == ([*range(200), "last"], "last", 0)


async def test_a_wake_up_with_nothing_rung_is_ignored():
    """A loop may report a doorbell readable when nothing rang it (libuv allows such reports): the
    channel's reader then raises nothing, and the worker still answers."""
    w = ThreadWorker(echo)
    try:
        async with asyncio.timeout(10):
            assert await w.request(1) == 1
            doorbell(asyncio.get_running_loop())._answer()  # white-box: the host loop's, with no ring
            assert await w.request(2) == 2
    finally:
        await w.terminate()


# -- how the script runs ------------------------------------------------------------------------------


async def test_each_worker_has_a_fresh_module_namespace(scripts):
    """Two workers running the same script file do not share its module-level state."""
    async with ThreadWorker(scripts / "lim_counter.py") as a, ThreadWorker(scripts / "lim_counter.py") as b:
        async with asyncio.timeout(10):
            assert [await a.request(None) for _ in range(3)] == [1, 2, 3]
            assert [await b.request(None) for _ in range(2)] == [1, 2]
            assert await a.request(None) == 4
    async with ThreadWorker(scripts / "lim_counter.py") as c:  # and a later worker starts afresh too
        async with asyncio.timeout(10):
            assert await c.request(None) == 1


async def test_module_worker_has_a_fresh_namespace(scripts, monkeypatch):
    """A dotted module name also runs in a fresh namespace per worker."""
    monkeypatch.syspath_prepend(str(scripts))
    async with ThreadWorker("lim_counter") as a, ThreadWorker("lim_counter") as b:
        async with asyncio.timeout(10):
            assert await a.request(None) == 1
            assert await a.request(None) == 2
            assert await b.request(None) == 1


async def test_top_level_runs_inside_the_workers_running_loop(scripts):
    """The script's top level can use the running loop to create a task, which runs on that loop."""
    async with ThreadWorker(scripts / "lim_toplevel.py") as w:
        async with asyncio.timeout(10):
            async for message in w.messages():
                assert message == ("task ran", True)
                break
            assert await w.request(None) == {"same_loop": True, "same_thread": True, "task_done": True}


async def test_worker_runs_on_its_own_thread(scripts):
    """The worker's code runs on a thread other than the host's, and each worker has its own thread."""
    async with ThreadWorker(scripts / "lim_probe.py") as a, ThreadWorker(scripts / "lim_probe.py") as b:
        async with asyncio.timeout(10):
            fa, fb = await a.request(None), await b.request(None)
    assert threading.get_ident() not in (fa["ident"], fb["ident"])
    assert threading.get_native_id() not in (fa["native_id"], fb["native_id"])
    assert fa["ident"] != fb["ident"]
    assert fa["native_id"] != fb["native_id"]
