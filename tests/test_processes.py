"""Whole-process behaviour: the asyncio REPL, the example, interpreter exit, and dropped handles.

Subprocesses run from the repository root, each with a timeout so that a hang fails the test.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from arkworker import ThreadWorker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(
    args: list[str], *, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python <args>`` in the repository root; a hang past ``timeout`` raises TimeoutExpired."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONASYNCIODEBUG", None)
    return subprocess.run(
        [sys.executable, *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def run_code(code: str, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_python(["-c", textwrap.dedent(code)], timeout=timeout)


# -- (1) the REPL --------------------------------------------------------------------------------------


def test_seed_flow_typed_line_by_line_in_the_asyncio_repl():
    """The seed flow typed into `python -m asyncio` with top-level await prints the reply and exit code 0."""
    lines = [
        "from arkworker import ThreadWorker",
        'w = ThreadWorker("examples/workers/hello.py")',
        'await w.post_message("hello world")',
        # One line: CPython 3.13.0's REPL fails on indented lines piped to it (not typed).
        'async for reply in w.messages(): print("REPLY", reply); break',
        "",
        "code = await w.terminate()",
        'print("EXIT", code, w.exit_code, w.state.name)',
        'e = ThreadWorker("tests/scripts/echo.py")',
        'print("REQUEST", await e.request(41))',
        "await e.terminate()",
        'print("EXIT2", e.exit_code)',
    ]
    result = run_python(["-m", "asyncio"], input="\n".join(lines) + "\n")
    assert "Traceback" not in result.stderr, result.stderr
    assert "REPLY success" in result.stdout
    assert "EXIT 0 0 TERMINATED" in result.stdout
    assert "REQUEST ('echo', 41)" in result.stdout
    assert "EXIT2 0" in result.stdout
    assert result.returncode == 0


# -- (2) the example ------------------------------------------------------------------------------------


def test_hello_host_example_runs():
    """examples/hello_host.py prints the seed's reply and a clean exit."""
    result = run_python(["examples/hello_host.py"])
    assert result.returncode == 0, result.stderr
    assert "worker:: res is success" in result.stdout
    assert "worker exited with code 0" in result.stdout
    assert "Traceback" not in result.stderr


# -- (3) interpreter exit -------------------------------------------------------------------------------


def test_exit_with_a_live_worker_does_not_hang_and_terminates_it():
    """A program that never terminates its worker still exits promptly with code 0, terminating the worker."""
    started = time.monotonic()
    result = run_code(
        """
        import asyncio
        from arkworker import ThreadWorker

        async def main():
            w = ThreadWorker("tests/scripts/lim_exit_cleanup.py")
            print("worker says", await w.request("hi"), flush=True)

        asyncio.run(main())
        print("main done", flush=True)
        """,
        timeout=30,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "worker says ready" in result.stdout
    assert "main done" in result.stdout
    assert "worker cleaned up" in result.stdout  # terminated at exit, not abandoned
    assert "Traceback" not in result.stderr
    assert elapsed < 20


STUCK_IN = {
    "a handler": "def on_message(e):\n    entered.set()\n    never.wait()\n",
    "asyncio.to_thread": "async def on_message(e):\n    entered.set()\n    await asyncio.to_thread(never.wait)\n",
}
STUCK_PROGRAM = """
import asyncio, logging, threading
from arkworker import ThreadWorker

logging.basicConfig()
entered = threading.Event()
never = threading.Event()

def stuck(port):
ON_MESSAGE
    port.onmessage = on_message

async def main():
    w = ThreadWorker(stuck, name="stuck-one")
    w.post_message("go")
    assert await asyncio.to_thread(entered.wait, 10)
    print("worker is stuck", flush=True)

asyncio.run(main())
print("main done", flush=True)
"""


@pytest.mark.parametrize("stuck_in", STUCK_IN.values(), ids=STUCK_IN.keys())
def test_exit_with_a_worker_stuck_in_blocking_code_is_bounded_and_reported(stuck_in):
    """A worker blocked forever (in a handler, or in a thread of its loop's default executor) does not
    hold up exit, which waits for it once, bounded, and the arkworker logger reports it."""
    started = time.monotonic()
    result = run_code(STUCK_PROGRAM.replace("ON_MESSAGE\n", textwrap.indent(stuck_in, "    ")), timeout=20)
    elapsed = time.monotonic() - started
    assert "worker is stuck" in result.stdout
    assert "main done" in result.stdout
    assert result.returncode == 0, result.stderr
    assert elapsed < 9  # the host loop's end waits 5 s for it; interpreter exit does not wait again
    report = [line for line in result.stderr.splitlines() if ":arkworker:" in line and "stuck-one" in line]
    assert report, result.stderr


# -- (4) a dropped handle keeps running ---------------------------------------------------------------


async def test_dropped_worker_keeps_running_and_delivering():
    """A ThreadWorker whose handle is dropped and garbage-collected keeps running and delivering to callbacks."""
    host_loop = asyncio.get_running_loop()
    worker_side: dict[str, object] = {}
    ready = threading.Event()

    def script(port):
        worker_side["loop"] = asyncio.get_running_loop()
        worker_side["port"] = port
        ready.set()

    received: asyncio.Future[object] = host_loop.create_future()
    exited: asyncio.Future[int] = host_loop.create_future()

    w = ThreadWorker(script, name="dropped")
    w.onmessage = lambda e: received.set_result(e.data)
    w.onexit = exited.set_result
    async with asyncio.timeout(10):
        assert await asyncio.to_thread(ready.wait, 10)
    del w
    gc.collect()

    assert "arkworker-dropped" in {t.name for t in threading.enumerate()}

    def post_then_close():
        port = worker_side["port"]
        port.post_message("still here")
        port.close()

    # Trigger the worker from its own loop: no handle is involved.
    worker_side["loop"].call_soon_threadsafe(post_then_close)  # type: ignore[attr-defined]
    async with asyncio.timeout(10):
        assert await received == "still here"
        assert await exited == 0
    assert "arkworker-dropped" not in {t.name for t in threading.enumerate()}


@pytest.mark.parametrize("collect", [True, False], ids=["gc", "no-gc"])
def test_dropped_worker_keeps_running_in_a_subprocess(collect):
    """In a fresh process, a dropped handle's worker still answers through a callback registered before the drop."""
    result = run_code(
        f"""
        import asyncio, gc, threading
        from arkworker import ThreadWorker

        async def main():
            loop = asyncio.get_running_loop()
            got = loop.create_future()
            w = ThreadWorker("tests/scripts/hello.py", name="orphan")
            w.onmessage = lambda e: got.set_result(e.data)
            w.post_message("hello world")
            del w
            if {collect}:
                gc.collect()
            print("alive", any(t.name == "arkworker-orphan" for t in threading.enumerate()), flush=True)
            print("got", await asyncio.wait_for(got, 10), flush=True)

        asyncio.run(main())
        """,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "alive True" in result.stdout
    assert "got success" in result.stdout
