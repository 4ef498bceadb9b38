"""Errors and exit codes: onerror, onallerrors, WorkerCrashedError, and the ArkTS error codes."""

import asyncio
import os
import pathlib

from arkworker import (
    ErrorEvent,
    InvalidScriptError,
    ThreadWorker,
    WorkerCrashedError,
    WorkerNotRunningError,
)

WORKER = pathlib.Path(__file__).parent / "workers" / "fragile.py"


def show(event: ErrorEvent) -> None:
    print(f"  onerror: {event.message} at {os.path.basename(event.filename)}:{event.lineno}")


async def main() -> None:
    # 1. onerror: the worker reports the error, then terminates (ArkTS); the exit code becomes 1.
    w = ThreadWorker(WORKER)
    w.onerror = show
    w.post_message("crash")
    print("1. exit code after onerror:", await w.wait())
    try:
        w.post_message("anything")
    except WorkerNotRunningError as exc:
        print(f"   then post_message raises {type(exc).__name__} (code {exc.code})")

    # 2. onallerrors: the worker keeps running; the exit code is still 1 (sticky).
    w = ThreadWorker(WORKER)
    w.onallerrors = lambda event: print(f"  onallerrors: {event.message}")
    w.post_message("crash")
    print("2. still running after onallerrors:", await w.request("ping"))
    print("   exit code:", await w.terminate())

    # 3. Nobody handled it: leaving `async with` raises WorkerCrashedError from the original error.
    try:
        async with ThreadWorker(WORKER) as w:
            w.post_message("crash")
            await w.wait()
    except WorkerCrashedError as exc:
        print(f"3. {type(exc).__name__}, caused by {exc.__cause__!r}")

    # 4. Errors raised to the caller carry the ArkTS code.
    try:
        ThreadWorker("examples/workers/no_such_worker.py")
    except InvalidScriptError as exc:
        print(f"4. {type(exc).__name__} (code {exc.code})")


if __name__ == "__main__":
    asyncio.run(main())
