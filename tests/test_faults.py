"""Fault injection: each test provokes one fault and checks that the program stays bounded and correct.

In-process tests leave no worker running; whole-process faults (interpreter exit, SIGINT, fork) run in a
subprocess with a timeout, so that a hang fails the test instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from arkworker import ErrorEvent, ThreadWorker, WorkerError, WorkerNotRunningError, WorkerState

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 10.0


# -- helpers -------------------------------------------------------------------------------------------


def python_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONASYNCIODEBUG", None)
    return env


def run_code(code: str, *, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``python -c code`` in the repository root; a hang past ``timeout`` raises TimeoutExpired."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=python_env(),
    )
    return result, time.monotonic() - started


def worker_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("arkworker-")]


def signal_host(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], value: object = None) -> None:
    """Worker thread: resolve a host-loop future."""

    def resolve() -> None:
        if not future.done():
            future.set_result(value)

    loop.call_soon_threadsafe(resolve)


@contextlib.contextmanager
def released(event: threading.Event) -> Iterator[threading.Event]:
    """Set ``event`` on the way out, whatever happens, so that a blocked worker can always finish."""
    try:
        yield event
    finally:
        event.set()


# -- a handler stuck in blocking code -------------------------------------------------------------------


async def test_terminate_of_a_worker_stuck_in_blocking_code_is_bounded_by_the_caller():
    """While a handler blocks, `terminate()` does not pre-empt it but the caller can bound the wait, posts are refused, and the worker exits once the call returns."""
    loop = asyncio.get_running_loop()
    entered = loop.create_future()
    with released(threading.Event()) as release:

        def stuck(port: Any) -> None:
            def on_message(e: Any) -> None:
                signal_host(loop, entered)
                release.wait()

            port.onmessage = on_message

        w = ThreadWorker(stuck, name="stuck")
        w.post_message("block")
        await asyncio.wait_for(entered, TIMEOUT)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(w.terminate(), 0.2)  # the bound is the caller's
        assert w.state is WorkerState.TERMINATING
        assert w.exit_code is None
        with pytest.raises(WorkerNotRunningError):
            w.post_message("more")
        assert worker_threads() == ["arkworker-stuck"]
    assert await asyncio.wait_for(w.wait(), TIMEOUT) == 0
    assert w.state is WorkerState.TERMINATED
    assert not worker_threads()


def test_interpreter_exit_with_a_worker_stuck_in_blocking_code_is_bounded():
    """A program whose worker is stuck forever in a blocking call, even after `terminate()` timed out, still exits, in bounded time, reporting the worker."""
    result, elapsed = run_code(
        """
        import asyncio, logging, threading
        from arkworker import ThreadWorker

        logging.basicConfig(format="%(levelname)s:%(name)s:%(message)s")
        entered, never = threading.Event(), threading.Event()

        def stuck(port):
            def on_message(e):
                entered.set()
                never.wait()
            port.onmessage = on_message

        async def main():
            w = ThreadWorker(stuck, name="stuck-forever")
            w.post_message("go")
            assert await asyncio.to_thread(entered.wait, 10)
            try:
                await asyncio.wait_for(w.terminate(), 0.2)
            except TimeoutError:
                print("terminate timed out", flush=True)

        asyncio.run(main())
        print("main done", flush=True)
        """,
        timeout=40,
    )
    assert "terminate timed out" in result.stdout
    assert "main done" in result.stdout
    assert result.returncode == 0, result.stderr
    # asyncio.run's end waits at most 5 s for the host loop's workers; interpreter exit does not wait again.
    assert elapsed < 12
    report = [
        line for line in result.stderr.splitlines() if ":arkworker:" in line and "stuck-forever" in line
    ]
    assert report, result.stderr
    assert "Traceback" not in result.stderr


def test_a_program_that_configures_no_logging_still_sees_the_warnings():
    """The `arkworker` logger has no handler of its own: with no logging configured, its warnings reach
    stderr as Python's do (messages a failed worker never handled, here). Messages that a worker's own
    `close()` discarded are counted, and logged below warning level: that program prints nothing."""
    result, _ = run_code(
        """
        import asyncio
        from arkworker import ThreadWorker

        def fails(port):
            raise ValueError("top level")

        def closes(port):
            def on_message(e):
                port.close()
            port.onmessage = on_message

        async def main():
            failed = ThreadWorker(fails, name="fails-at-top")
            failed.onerror = lambda e: None
            failed.post_message(1)
            failed.post_message(2)
            closed = ThreadWorker(closes, name="closes-itself")
            for n in range(3):
                closed.post_message(n)
            print(await failed.wait(), failed.statistics().discarded, flush=True)
            print(await closed.wait(), closed.statistics().discarded, flush=True)

        asyncio.run(main())
        """,
        timeout=40,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["1 2", "0 2"]
    assert result.stderr.splitlines() == ["worker 'fails-at-top' exited with 2 inbound messages unhandled"]


# -- the host loop ending while workers live ----------------------------------------------------------


def test_asyncio_run_returning_with_live_workers_exits_promptly():
    """When `asyncio.run` returns with busy, idle and nested workers never terminated, their threads end, `onexit` runs, and the process exits at once with code 0."""
    result, elapsed = run_code(
        """
        import asyncio, threading
        from arkworker import ThreadWorker

        def child(port):
            port.onmessage = lambda e: e.data

        def parent(port):
            kids = []
            def on_message(e):
                kids.append(ThreadWorker(child, name="nested-child"))
                return "spawned"
            port.onmessage = on_message

        def streamer(port):
            async def life():
                n = 0
                while True:
                    await port.post_message(n)   # backpressure against the host's inbox
                    n += 1
            return life()

        def idle(port):
            pass

        async def main():
            s = ThreadWorker(streamer, name="streamer", max_inbox=8)
            got = []
            async for n in s.messages():
                got.append(n)
                if len(got) == 100:
                    break
            p = ThreadWorker(parent, name="parent")
            print(await p.request("spawn"), flush=True)
            i = ThreadWorker(idle, name="idle")
            for w in (s, p, i):
                w.onexit = lambda code, w=w: print("onexit", w.name, code, flush=True)
            print("alive", sorted(t.name for t in threading.enumerate() if t.name.startswith("arkworker-")), flush=True)

        asyncio.run(main())
        print("after run", [t.name for t in threading.enumerate() if t.name.startswith("arkworker-")], flush=True)
        """,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "spawned" in result.stdout
    assert (
        "alive ['arkworker-idle', 'arkworker-nested-child', 'arkworker-parent', 'arkworker-streamer']"
        in result.stdout
    )
    assert "after run []" in result.stdout, result.stdout
    for name in ("streamer", "parent", "idle"):
        assert f"onexit {name} 0" in result.stdout, result.stdout
    assert "Traceback" not in result.stderr
    assert "Task was destroyed" not in result.stderr
    assert elapsed < 10


# -- KeyboardInterrupt in the host ----------------------------------------------------------------------


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The next line of ``proc``'s stdout, or AssertionError if none comes within ``timeout``."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the child printed nothing in time"
    return proc.stdout.readline()


def test_sigint_while_awaiting_requests_exits_and_cancels_the_handlers():
    """Ctrl-C in a host awaiting requests raises KeyboardInterrupt, cancels the handlers in the workers, and the process exits instead of hanging."""
    code = textwrap.dedent(
        """
        import asyncio, os
        from arkworker import ThreadWorker

        def slow(port):
            async def on_message(e):
                port.post_message("started")
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    os.write(1, f"handler cancelled {e.data}\\n".encode())  # one atomic write per thread
                    raise
            port.onmessage = on_message

        async def main():
            ws = [ThreadWorker(slow, name=f"slow{i}") for i in range(3)]
            started = asyncio.Event()
            count = 0
            def on_started(e):
                nonlocal count
                count += 1
                if count == len(ws):
                    started.set()
            for w in ws:
                w.onmessage = on_started
            requests = [asyncio.ensure_future(w.request(i)) for i, w in enumerate(ws)]
            await asyncio.wait_for(started.wait(), 10)
            print("ready", flush=True)
            try:
                await asyncio.gather(*requests)
            finally:
                print("main cancelled", flush=True)

        asyncio.run(main())
        """
    )
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=python_env(),
    )
    try:
        assert read_line(proc, 20).strip() == "ready"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    elapsed = time.monotonic() - started
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err, err
    assert "main cancelled" in out
    # Found anywhere in the output: another thread's write may land inside a line printed by main.
    assert sorted(re.findall(r"handler cancelled \d", out)) == [
        "handler cancelled 0",
        "handler cancelled 1",
        "handler cancelled 2",
    ], out
    assert "Task was destroyed" not in err
    assert elapsed < 20


# -- exceptions in host callbacks -----------------------------------------------------------------------


def poster(port: Any) -> None:
    """Worker: the request ``n`` posts 0..n-1 back; the post ``"fail"`` raises ValueError."""

    def on_message(e: Any) -> object:
        if e.data == "fail":
            raise ValueError("worker failure")
        for i in range(e.data):
            port.post_message(i)
        return "posted"

    port.onmessage = on_message


async def test_exceptions_in_message_callbacks_go_to_the_loop_handler_and_delivery_continues(loop_errors):
    """A raising `onmessage` and a raising async listener each reach the loop's exception handler, and every message still reaches the next listener, in order."""
    w = ThreadWorker(poster, name="cb-message")
    got: list[int] = []
    all_in = asyncio.get_running_loop().create_future()

    def bad_handler(e: Any) -> None:
        raise KeyError(e.data)

    async def bad_listener(e: Any) -> None:
        await asyncio.sleep(0)
        raise LookupError(e.data)

    def good_listener(e: Any) -> None:
        got.append(e.data)
        if len(got) == 5 and not all_in.done():
            all_in.set_result(None)

    w.onmessage = bad_handler
    w.on("message", bad_listener)
    w.on("message", good_listener)
    try:
        assert await asyncio.wait_for(w.request(5), TIMEOUT) == "posted"
        await asyncio.wait_for(all_in, TIMEOUT)
    finally:
        # Host callback errors are not worker errors: the exit code stays 0.
        assert await asyncio.wait_for(w.terminate(), TIMEOUT) == 0
    assert got == [0, 1, 2, 3, 4]
    kinds = [type(exc) for exc in loop_errors.exceptions]
    assert kinds.count(KeyError) == 5, loop_errors.contexts
    assert kinds.count(LookupError) == 5, loop_errors.contexts
    assert all(c.get("worker") is w for c in loop_errors.contexts)


@pytest.mark.parametrize("handler", ["onerror", "onallerrors"])
async def test_exception_in_onerror_goes_to_the_loop_handler_and_the_error_is_still_delivered(
    loop_errors, handler
):
    """An `onerror`/`onallerrors` that raises reaches the loop's exception handler, the `"error"` listeners still run (onerror), and the worker's fate follows SPEC."""
    w = ThreadWorker(poster, name=f"cb-{handler}")
    seen: list[ErrorEvent] = []

    def bad(event: ErrorEvent) -> None:
        raise RuntimeError("callback bug")

    setattr(w, handler, bad)
    w.on("error", seen.append)
    try:
        w.post_message("fail")
        if handler == "onallerrors":
            # The worker keeps running: a later request is answered.
            assert await asyncio.wait_for(w.request(0), TIMEOUT) == "posted"
            assert w.state is WorkerState.RUNNING
        code = await asyncio.wait_for(w.wait() if handler == "onerror" else w.terminate(), TIMEOUT)
    finally:
        await asyncio.wait_for(w.terminate(), TIMEOUT)
    assert code == 1  # a worker error happened
    if handler == "onerror":
        assert len(seen) == 1
        assert isinstance(seen[0].error, ValueError)
    assert [type(e) for e in loop_errors.exceptions] == [RuntimeError], loop_errors.contexts
    assert loop_errors.contexts[0].get("worker") is w


async def test_exception_in_onexit_goes_to_the_loop_handler_and_exit_still_settles(loop_errors):
    """An `onexit` that raises reaches the loop's exception handler, the `"exit"` listeners still get the code, and `terminate()`/`wait()` still return it."""
    w = ThreadWorker(poster, name="cb-exit")
    codes: list[int] = []

    async def bad(code: int) -> None:
        raise RuntimeError(f"onexit bug {code}")

    w.onexit = bad
    w.on("exit", codes.append)
    assert await asyncio.wait_for(w.terminate(), TIMEOUT) == 0
    assert await asyncio.wait_for(w.wait(), TIMEOUT) == 0
    assert codes == [0]
    assert [str(e) for e in loop_errors.exceptions] == ["onexit bug 0"]


# -- a dropped handle ---------------------------------------------------------------------------------


@pytest.mark.parametrize("host_end", ["asyncio.run", "hand-closed loop"])
def test_dropped_handle_keeps_running_and_is_terminated_at_the_end(host_end):
    """A worker whose only handle was dropped and collected keeps running, and is still terminated (its cleanup runs) when the host loop ends or, for a hand-closed loop, at interpreter exit."""
    result, elapsed = run_code(
        f"""
        import asyncio, gc, threading, weakref
        from arkworker import ThreadWorker

        shared = {{}}
        ready, alive = threading.Event(), threading.Event()

        def script(port):
            shared["loop"] = asyncio.get_running_loop()
            async def life():
                ready.set()
                try:
                    await asyncio.sleep(3600)
                finally:
                    print("worker cleaned up", flush=True)
            return life()

        async def main():
            w = ThreadWorker(script, name="orphan")
            assert await asyncio.to_thread(ready.wait, 10)
            ref = weakref.ref(w)
            del w
            gc.collect()
            print("handle collected:", ref() is None, flush=True)
            shared["loop"].call_soon_threadsafe(alive.set)  # the worker's loop still runs
            print("worker loop runs:", await asyncio.to_thread(alive.wait, 10), flush=True)

        if {host_end == "asyncio.run"}:
            asyncio.run(main())
        else:
            loop = asyncio.new_event_loop()
            loop.run_until_complete(main())
            loop.close()
        print("after loop:", [t.name for t in threading.enumerate() if t.name.startswith("arkworker-")], flush=True)
        """,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "worker loop runs: True" in result.stdout
    assert "worker cleaned up" in result.stdout, (result.stdout, result.stderr)
    if host_end == "asyncio.run":
        assert "after loop: []" in result.stdout
        assert result.stdout.index("worker cleaned up") < result.stdout.index("after loop")
    else:
        assert "after loop: ['arkworker-orphan']" in result.stdout
        assert result.stdout.index("after loop") < result.stdout.index("worker cleaned up")
    assert "Traceback" not in result.stderr
    assert elapsed < 10


def test_a_worker_held_by_backpressure_when_its_loop_was_closed_by_hand_ends_at_interpreter_exit():
    """A worker handler awaiting its posts against a full host inbox that nobody will read, when the host
    loop was closed by hand: interpreter exit lifts the limit as terminate() does, so the handler finishes
    (its cleanup runs) and the process exits at once, nothing abandoned."""
    result, _elapsed = run_code(
        """
        import asyncio, threading
        from arkworker import ThreadWorker

        waiting = threading.Event()

        def script(port):
            async def on_message(e):
                try:
                    for i in range(100):
                        if i == 2:
                            waiting.set()  # this post fills the host inbox (max_inbox=2): it waits
                        await port.post_message(i)
                finally:
                    print("handler cleanup ran", flush=True)
            port.onmessage = on_message

        async def main():
            w = ThreadWorker(script, max_inbox=2)
            w.post_message("go")
            assert await asyncio.to_thread(waiting.wait, 10)
            return w

        loop = asyncio.new_event_loop()
        worker = loop.run_until_complete(main())
        loop.close()
        print("loop closed", flush=True)
        """,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.index("loop closed") < result.stdout.index("handler cleanup ran")
    assert "abandoned" not in result.stderr, result.stderr  # an abandoned worker is logged after 5 s


async def test_the_life_coroutine_of_a_worker_survives_garbage_collection():
    """A worker whose life coroutine awaits something only it references keeps that life through a `gc.collect()`: it neither dies silently nor stops being the worker's life."""
    life_ended: list[str] = []

    def script(port: Any) -> Any:
        async def life() -> None:
            loop = asyncio.get_running_loop()
            forever = loop.create_future()  # referenced only by this coroutine: "wait until the worker ends"
            loop.call_soon(port.post_message, "started")  # runs once this task is suspended below
            try:
                await forever
            except asyncio.CancelledError:
                life_ended.append("cancelled")
                raise
            except GeneratorExit:
                life_ended.append("garbage-collected")
                raise

        return life()

    w = ThreadWorker(script, name="life")
    try:
        async for data in w.messages():
            assert data == "started"
            break
        gc.collect()
        assert life_ended == [], "the worker's life coroutine was garbage-collected while it was waiting"
        assert w.state is WorkerState.RUNNING
    finally:
        code = await asyncio.wait_for(w.terminate(), TIMEOUT)
    assert code == 0
    assert life_ended == ["cancelled"]


# -- a worker posting to a host whose loop has closed -----------------------------------------------------


@pytest.mark.parametrize("host_end", ["asyncio.run", "hand-closed loop"])
def test_worker_post_to_a_closed_host_loop_raises_worker_not_running(host_end):
    """Once its host loop has closed, a worker's `post_message` and global calls raise `WorkerNotRunningError` in the worker, and the worker can still close and end its thread."""
    shared: dict[str, Any] = {}
    entered, release, done = threading.Event(), threading.Event(), threading.Event()
    outcomes: list[object] = []

    def script(port: Any) -> None:
        shared["loop"] = asyncio.get_running_loop()
        shared["port"] = port

        def on_message(e: Any) -> None:
            entered.set()
            release.wait(TIMEOUT)  # held past the host loop's end, so that it cannot be terminated first

        port.onmessage = on_message

    def attempt() -> None:
        port = shared["port"]
        for call in (
            lambda: port.post_message("late"),
            lambda: port.call_global_call_object_method("host", "m", 100),
        ):
            try:
                call()
            except BaseException as exc:
                outcomes.append(exc)
            else:
                outcomes.append(None)
        port.close()
        done.set()

    async def main() -> None:
        w = ThreadWorker(script, name="orphaned")
        w.post_message("hold" if host_end == "asyncio.run" else "no-hold")
        assert await asyncio.to_thread(entered.wait, TIMEOUT)
        shared["handle"] = w

    with released(release):
        if host_end == "asyncio.run":
            # asyncio.run's end terminates the worker; held in its handler, it outlives the loop
            # (the loop end gives up after 5 s and logs it).
            asyncio.run(main())
        else:
            loop = asyncio.new_event_loop()
            loop.run_until_complete(main())
            loop.close()  # closed by hand: the worker is left running
        # Queued while the handler still holds the worker, so it runs before the worker can exit.
        shared["loop"].call_soon_threadsafe(attempt)
    assert done.wait(TIMEOUT)
    assert [type(o) for o in outcomes] == [WorkerNotRunningError, WorkerNotRunningError], outcomes
    thread = next((t for t in threading.enumerate() if t.name == "arkworker-orphaned"), None)
    if thread is not None:
        thread.join(TIMEOUT)
        assert not thread.is_alive()


# -- a parent that crashes with children alive ------------------------------------------------------------


@pytest.mark.parametrize("crash", ["error", "system-exit", "two-exit-signals", "top-level"])
async def test_children_end_when_their_parent_crashes(loop_errors, crash):
    """When a worker dies from an unhandled error, a SystemExit escaping its handler (or two, from two tasks,
    the second escaping the wind-down), or a failing top level, its live children are terminated and their
    threads have ended by the time `wait()` returns."""
    loop = asyncio.get_running_loop()
    children_up = loop.create_future()
    child_exits: list[int] = []

    def child(port: Any) -> None:
        port.onmessage = lambda e: e.data

    kids: list[ThreadWorker] = []

    def parent(port: Any) -> None:
        kids.extend(ThreadWorker(child, name=f"kid-{crash}-{i}") for i in range(2))
        for kid in kids:
            kid.onexit = child_exits.append
        signal_host(loop, children_up)
        if crash == "top-level":
            raise ValueError("top level failed")

        async def exit_signal() -> None:
            raise SystemExit(3)

        def on_message(e: Any) -> None:
            if crash == "two-exit-signals":
                for _ in range(2):
                    asyncio.get_running_loop().create_task(exit_signal())
                return
            if crash == "system-exit":
                raise SystemExit(3)
            raise ValueError("handler failed")

        port.onmessage = on_message

    def kid_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith(f"arkworker-kid-{crash}-")]

    w = ThreadWorker(parent, name=f"parent-{crash}")
    try:
        await asyncio.wait_for(children_up, TIMEOUT)
        if crash != "top-level":
            w.post_message("crash")
        code = await asyncio.wait_for(w.wait(), TIMEOUT)
        orphans = [t.name for t in kid_threads()]
    finally:
        await asyncio.wait_for(w.terminate(), TIMEOUT)
        # Safety net so that a failure here does not leak threads into later tests: the children's host
        # loop (the parent's) is gone, so they are told to stop from this thread.
        for kid in kids:
            kid.terminate()
        for thread in kid_threads():
            thread.join(TIMEOUT)
    assert code == 1
    assert orphans == [], f"children still running after their parent exited: {orphans}"
    assert child_exits == [0, 0]
    assert len(loop_errors.contexts) == 1  # the unhandled worker error, reported once
    assert isinstance(
        loop_errors.exceptions[0], ValueError if crash in ("error", "top-level") else SystemExit
    )


async def test_a_worker_whose_code_stops_its_loop_winds_down_as_after_close():
    """Worker code that stops its own loop (loop.stop()) ends the worker as close() does: its tasks are
    cancelled (their finally blocks run), its children are terminated, and the exit code is 0."""
    loop = asyncio.get_running_loop()
    cleaned_up = loop.create_future()
    kids: list[ThreadWorker] = []

    def parent(port: Any) -> None:
        kids.append(ThreadWorker(lambda child_port: None, name="kid-of-stopped-loop"))

        async def holds_a_resource() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                signal_host(loop, cleaned_up, "finally ran")

        asyncio.get_running_loop().create_task(holds_a_resource())
        port.onmessage = lambda e: asyncio.get_running_loop().stop()

    w = ThreadWorker(parent)
    w.post_message("stop")
    try:
        assert await asyncio.wait_for(w.wait(), TIMEOUT) == 0
        assert await asyncio.wait_for(cleaned_up, TIMEOUT) == "finally ran"
        assert [kid.state for kid in kids] == [WorkerState.TERMINATED]
    finally:  # safety net: the child's host loop (the parent's) is gone, so it is told from here
        for kid in kids:
            kid.terminate()
    assert not [t for t in threading.enumerate() if t.name == "arkworker-kid-of-stopped-loop"]


# -- os.fork() ------------------------------------------------------------------------------------------


FORK_PRELUDE = """
import asyncio, os, threading, time
from arkworker import ThreadWorker

def echo(port):
    port.onmessage = lambda e: e.data

def in_child():
    names = [t.name for t in threading.enumerate()]
    print("child threads", names, len(os.listdir("/proc/self/task")), flush=True)
    try:
        ThreadWorker(echo)
    except Exception as exc:
        print("child new worker:", type(exc).__name__, flush=True)
"""


def test_fork_after_workers_started_child_has_no_workers_and_parent_keeps_working():
    """After `os.fork()` the child has no worker threads (it cannot reach the parent's workers) and ends with `os._exit`; the parent's workers keep working and exit cleanly."""
    result, elapsed = run_code(
        FORK_PRELUDE
        + """
async def main():
    ws = [ThreadWorker(echo, name=f"pre{i}") for i in range(3)]
    print("parent before", await asyncio.gather(*(w.request(i) for i, w in enumerate(ws))), flush=True)
    pid = os.fork()
    if pid == 0:
        in_child()
        os._exit(7)
    _, status = os.waitpid(pid, 0)
    print("child status", os.waitstatus_to_exitcode(status), flush=True)
    print("parent after", await asyncio.gather(*(w.request(i) for i, w in enumerate(ws))), flush=True)
    print("codes", await asyncio.gather(*(w.terminate() for w in ws)), flush=True)

asyncio.run(main())
print("parent done", flush=True)
""",
        timeout=30,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "child threads ['MainThread'] 1" in out, out
    assert "child new worker: WorkerInitializationError" in out  # no running loop in the forked child
    assert "child status 7" in out
    assert "parent before [0, 1, 2]" in out
    assert "parent after [0, 1, 2]" in out
    assert "codes [0, 0, 0]" in out
    assert "parent done" in out
    assert "Traceback" not in result.stderr
    assert elapsed < 10


def test_fork_child_returning_through_asyncio_run_is_bounded():
    """A forked child that returns through `asyncio.run` (instead of `os._exit`) still ends, and the whole program ends in bounded time. The child's loop teardown unregisters the parent loop's self-pipe (an asyncio limitation), but the parent's workers still wake it through their own eventfds: a request is still answered."""
    result, elapsed = run_code(
        FORK_PRELUDE
        + """
async def main():
    ws = [ThreadWorker(echo, name=f"pre{i}") for i in range(3)]
    print("parent before", await asyncio.gather(*(w.request(i) for i, w in enumerate(ws))), flush=True)
    pid = os.fork()
    if pid == 0:
        in_child()
        return time.monotonic()
    _, status = os.waitpid(pid, 0)
    print("child status", os.waitstatus_to_exitcode(status), flush=True)
    try:
        # The child's loop.close() removed the shared epoll registration of this loop's self-pipe, so
        # call_soon_threadsafe can no longer wake this loop; a worker's doorbell still does.
        print("parent after", await asyncio.wait_for(ws[0].request("x"), 1), flush=True)
    except TimeoutError:
        print("parent after: no wake-up", flush=True)
    return None

began = asyncio.run(main())
if began is not None:
    print(f"child: asyncio.run teardown took {time.monotonic() - began:.1f} s", flush=True)
print("done", os.getpid(), flush=True)
""",
        timeout=40,
    )
    out = result.stdout
    print("\n[fork, child returns]", f"{elapsed:.1f} s:", out.replace("\n", " | "))
    assert result.returncode == 0, result.stderr
    assert "child threads ['MainThread'] 1" in out, out
    assert "child status 0" in out
    assert out.count("done ") == 2  # the child and the parent both finished
    if hasattr(os, "eventfd"):  # elsewhere call_soon_threadsafe wakes the parent, and cannot any more
        assert "parent after x" in out
    assert elapsed < 30


def test_a_forked_child_running_its_inherited_loop_does_not_take_its_parents_wake_ups():
    """A forked child whose copy of the host loop runs on a while shares the parent's epoll instance and
    its workers' doorbells. It must not answer them: the parent still gets every message its worker posts
    meanwhile and after, and its requests are answered."""
    result, _ = run_code(
        """
import asyncio, os
from arkworker import ThreadWorker

def streamer(port):
    async def life():
        i = 0
        while True:
            await asyncio.sleep(0.001)
            port.post_message(i)
            i += 1
    port.onmessage = lambda e: e.data
    return life()

async def main():
    loop = asyncio.get_running_loop()
    w = ThreadWorker(streamer)
    got = []
    w.onmessage = lambda e: got.append(e.data)
    await asyncio.wait_for(w.request("started"), 5)
    child_ends = loop.create_future()
    loop.call_later(0.3, child_ends.set_result, None)  # the child's copy of this timer fires too
    pid = os.fork()
    if pid == 0:
        await child_ends  # the child's loop runs on the epoll instance it shares with the parent
        os._exit(0)
    await child_ends
    os.waitpid(pid, 0)
    seen = len(got)
    print("answer:", await asyncio.wait_for(w.request("x"), 5), flush=True)
    while len(got) < seen + 50:  # the stream goes on after the child ended
        await asyncio.wait_for(w.request("sync"), 5)
    print("in order:", got == list(range(len(got))), flush=True)
    print("exit:", await asyncio.wait_for(w.terminate(), 5), flush=True)

asyncio.run(main())
""",
        timeout=40,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["answer: x", "in order: True", "exit: 0"], result.stdout


def test_a_host_loop_on_select_keeps_working_with_descriptors_past_its_range():
    """A host loop built on select() cannot watch a descriptor of 1024 or more. With that many open, a
    worker's doorbell would be one: the worker wakes that host by call_soon_threadsafe instead."""
    result, _ = run_code(
        """
import asyncio, os, resource, selectors
from arkworker import ThreadWorker

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if hard != resource.RLIM_INFINITY and hard < 1200:
    print("skip: at most", hard, "descriptors")
    raise SystemExit
resource.setrlimit(resource.RLIMIT_NOFILE, (4096 if hard == resource.RLIM_INFINITY else min(4096, hard), hard))

def echo(port):
    port.onmessage = lambda e: e.data

async def main():
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]  # an application's files
    w = ThreadWorker(echo)
    try:
        return await asyncio.wait_for(w.request("ping"), 5)
    finally:
        await asyncio.wait_for(w.terminate(), 5)

host = asyncio.SelectorEventLoop(selectors.SelectSelector())  # its self-pipe is below 1024
print("answer:", host.run_until_complete(main()))
""",
        timeout=40,
    )
    assert result.returncode == 0, result.stderr
    if result.stdout.startswith("skip:"):
        pytest.skip(result.stdout.strip())
    assert result.stdout.strip() == "answer: ping", result.stdout + result.stderr


# -- a plain callback that raises CancelledError ----------------------------------------------------


def _cancelled_error() -> None:
    """What `.result()` of a cancelled future raises: a CancelledError out of a plain callback."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.cancel()
    future.result()


async def test_worker_callback_raising_cancelled_error_is_a_worker_error_and_delivery_goes_on():
    """A sync worker handler that raises CancelledError takes the worker's error path like any other
    exception; the messages after it are still handled, and a request answered by one fails with
    WorkerError."""

    def setup(port: Any) -> None:
        def on_message(e: Any) -> Any:
            if e.data in (3, "request"):
                _cancelled_error()
            port.post_message(e.data)
            return e.data

        port.onmessage = on_message

    errors: list[ErrorEvent] = []
    async with ThreadWorker(setup) as w:
        w.onallerrors = errors.append
        for i in range(6):
            w.post_message(i)
        with pytest.raises(WorkerError, match="cancelled in the worker"):
            await asyncio.wait_for(w.request("request"), 5)
        assert await asyncio.wait_for(w.request("after"), 5) == "after"
        received = [await asyncio.wait_for(anext(aiter(w.messages())), 5) for _ in range(6)]
    assert received == [0, 1, 2, 4, 5, "after"]
    assert [type(e.error) for e in errors] == [asyncio.CancelledError]


async def test_host_callback_raising_cancelled_error_goes_to_the_loop_handler_and_delivery_goes_on(
    loop_errors: Any,
) -> None:
    """A sync host onmessage that raises CancelledError reaches the loop's exception handler; later
    messages are still delivered and the worker exits cleanly."""
    got: list[object] = []
    done = asyncio.Event()

    def on_message(e: Any) -> None:
        if e.data == 1:
            _cancelled_error()
        got.append(e.data)
        if e.data == 3:
            done.set()

    def echo(port: Any) -> None:
        port.onmessage = lambda e: port.post_message(e.data)

    async with ThreadWorker(echo) as w:
        w.onmessage = on_message
        for i in range(4):
            w.post_message(i)
        await asyncio.wait_for(done.wait(), 5)
        await loop_errors.wait_for(1)
    assert got == [0, 2, 3]
    assert [type(e) for e in loop_errors.exceptions] == [asyncio.CancelledError]
    assert w.exit_code == 0


# -- exceptions that are neither errors nor SystemExit -------------------------------------------------


class Abort(BaseException):
    """Neither an Exception nor SystemExit, as a test runner's skip or failure is."""


@pytest.mark.parametrize(
    "where", ["top-level", "first-handler", "handler", "onerror-at-exit", "onerror-for-a-callback"]
)
async def test_a_base_exception_ends_the_worker_as_its_crash(loop_errors, where):
    """A BaseException that is neither an error nor SystemExit, raised by the top level, by a handler (the first run of the inbox or a later one) or by the worker's onerror during the exit, ends the worker with exit code 1 and is reported once, and its thread ends."""
    loop = asyncio.get_running_loop()
    running = loop.create_future()

    def script(port: Any) -> None:
        if where == "top-level":
            raise Abort("top level")

        def on_message(e: Any) -> None:
            raise Abort("handler")

        async def fails_when_cancelled() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise ValueError("a task failed as the exit cancelled it") from None

        def on_error(e: Any) -> None:
            raise Abort("onerror")

        def fails() -> None:
            raise ValueError("a plain callback failed")

        if where == "onerror-at-exit":
            port.onerror = on_error
            port.onmessage = lambda e: e.data
            asyncio.get_running_loop().create_task(fails_when_cancelled())
        elif where == "onerror-for-a-callback":
            port.onerror = on_error
            port.onmessage = lambda e: e.data
            asyncio.get_running_loop().call_soon(fails)  # its error reaches the loop's exception handler
        else:
            port.onmessage = on_message
        signal_host(loop, running)

    w = ThreadWorker(script, name=f"abort-{where}")
    if where == "first-handler":
        w.post_message("before the top level finished")
    elif where != "top-level":
        await asyncio.wait_for(running, TIMEOUT)
        if where == "handler":
            w.post_message("now")
    code = await asyncio.wait_for(w.terminate() if where == "onerror-at-exit" else w.wait(), TIMEOUT)
    assert code == 1
    assert w.state is WorkerState.TERMINATED
    assert f"arkworker-abort-{where}" not in worker_threads()
    assert [type(exc) for exc in loop_errors.exceptions] == [Abort]


@pytest.mark.parametrize("where", ["async-handler", "background-task"])
@pytest.mark.parametrize("abort", [SystemExit, KeyboardInterrupt, Abort])
async def test_an_abort_from_an_async_worker_handler_is_its_crash_and_nothing_else_logs_it(
    abort, where, caplog
):
    """An exit signal or an abort ending an async worker handler, or a task the worker started, ends the
    worker as its crash (exit code 1), and asyncio does not also log the task as "exception was never
    retrieved"."""

    def script(port: Any) -> None:
        async def on_message(e: Any) -> None:
            raise abort(f"from {where}")

        if where == "async-handler":
            port.onmessage = on_message
        else:
            port.onmessage = lambda e: asyncio.get_running_loop().create_task(on_message(e)) and None

    asyncio.get_running_loop().set_exception_handler(lambda loop, context: None)  # the crash's own report
    w = ThreadWorker(script)
    w.post_message("go")
    assert await asyncio.wait_for(w.wait(), TIMEOUT) == 1
    del w
    gc.collect()  # an unretrieved task exception is logged when the task is collected
    assert "never retrieved" not in caplog.text


@pytest.mark.parametrize("onerror", ["none", "sync", "async"])
async def test_an_error_of_a_task_cancelled_at_the_exit_reaches_the_host_once(onerror):
    """A task that raises an error as the exit cancels it, the life coroutine doing the same, and an async
    generator that raises as the exit closes it are each reported to the host exactly once, whatever the
    worker's onerror (an async one that suspends too); the exit code is 1."""

    def script(port: Any) -> Any:
        async def fails_when_closed() -> Any:
            try:
                yield
            finally:
                raise ValueError("an async generator failed as the exit closed it")

        async def fails_when_cancelled(what: str) -> None:
            generator = fails_when_closed()
            await anext(generator)  # left suspended: the exit closes it
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise ValueError(f"{what} failed as the exit cancelled it") from None

        async def on_error(e: Any) -> None:
            await asyncio.sleep(0.01)  # still running when the exit would end the loop

        if onerror == "sync":
            port.onerror = lambda e: None
        elif onerror == "async":
            port.onerror = on_error
        port.onmessage = lambda e: e.data
        asyncio.get_running_loop().create_task(fails_when_cancelled("a task"))
        return fails_when_cancelled("the life")

    heard: list[str] = []
    w = ThreadWorker(script)
    w.onallerrors = lambda event: heard.append(event.message)
    assert await asyncio.wait_for(w.request("ready?"), TIMEOUT) == "ready?"
    assert await asyncio.wait_for(w.terminate(), TIMEOUT) == 1
    assert sorted(heard) == [
        "ValueError: a task failed as the exit cancelled it",
        "ValueError: an async generator failed as the exit closed it",
        "ValueError: an async generator failed as the exit closed it",
        "ValueError: the life failed as the exit cancelled it",
    ]
    assert w.statistics().errors == 4


async def test_a_task_that_cancels_every_task_at_the_exit_still_lets_async_generators_close():
    """A worker task that, cancelled at the exit, cancels every task of its loop (the clean-up's own task included) does not keep the worker's async generators from being closed."""
    loop = asyncio.get_running_loop()
    closed = loop.create_future()

    def script(port: Any) -> None:
        async def ticks() -> Any:
            try:
                while True:
                    yield
                    await asyncio.sleep(0)
            finally:
                port.post_message("closed")

        async def life() -> None:
            generator = ticks()
            await generator.asend(None)  # left suspended: only shutdown_asyncgens() closes it
            try:
                await asyncio.Event().wait()
            finally:
                for task in asyncio.all_tasks():
                    if task is not asyncio.current_task():
                        task.cancel()

        asyncio.get_running_loop().create_task(life())
        port.onmessage = lambda e: e.data

    w = ThreadWorker(script)
    w.onmessage = lambda e: closed.set_result(e.data) if not closed.done() else None
    assert await asyncio.wait_for(w.request("up"), TIMEOUT) == "up"
    await asyncio.wait_for(w.terminate(), TIMEOUT)
    assert await asyncio.wait_for(closed, TIMEOUT) == "closed"


async def test_a_name_that_utf8_cannot_encode_still_names_the_worker():
    """A name with a lone surrogate, which UTF-8 cannot encode, names the Python thread as it is and, on
    Linux, the OS thread with the surrogate replaced."""

    def os_thread_name(port: Any) -> None:
        def on_message(e: Any) -> str | None:
            if not sys.platform.startswith("linux"):
                return None
            with open(f"/proc/self/task/{threading.get_native_id()}/comm") as comm:
                return comm.read().rstrip("\n")

        port.onmessage = on_message

    async with ThreadWorker(os_thread_name, name="a\udcffb") as w:
        comm = await asyncio.wait_for(w.request("name?"), TIMEOUT)
        assert "arkworker-a\udcffb" in worker_threads()
        assert comm == ("a?b" if sys.platform.startswith("linux") else None)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_base_exception_from_a_request_handler_ends_the_worker_either_way(loop_errors, kind):
    """A request handler, sync or async, that raises a BaseException that is not an error ends the worker
    as its crash, reported once; the request fails with WorkerNotRunningError."""

    def script(port: Any) -> None:
        def sync_handler(e: Any) -> None:
            raise Abort("sync request handler")

        async def async_handler(e: Any) -> None:
            raise Abort("async request handler")

        port.onmessage = sync_handler if kind == "sync" else async_handler

    w = ThreadWorker(script)
    with pytest.raises(WorkerNotRunningError):
        await asyncio.wait_for(w.request("go"), TIMEOUT)
    assert await asyncio.wait_for(w.wait(), TIMEOUT) == 1
    assert [type(exc) for exc in loop_errors.exceptions] == [Abort]
