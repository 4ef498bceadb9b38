"""Shutting down: terminate() drains, close() discards and counts, onexit and "exit" listeners run."""

import asyncio
import pathlib

from arkworker import ThreadWorker, WorkerNotRunningError

WORKER = pathlib.Path(__file__).parent / "workers" / "echo.py"


async def main() -> None:
    # terminate(): messages posted before it are still handled, and their replies still delivered.
    w = ThreadWorker(WORKER)
    w.onexit = lambda code: print("  onexit:", code)
    w.on("exit", lambda code: print("  exit listener:", code))
    for text in ("one", "two", "three"):
        w.post_message(text)
    code = await w.terminate()  # no await needed to start it; awaiting gives the exit code
    print("terminate() returned", code, "once the thread had ended; state:", w.state.name)
    print("replies:", [reply async for reply in w.messages()])  # ends: the worker has exited
    try:
        w.post_message("too late")
    except WorkerNotRunningError as exc:
        print(f"after terminate(): {type(exc).__name__} (code {exc.code})")

    # close() from inside the worker: the rest of its inbox is discarded, and counted on the host.
    w = ThreadWorker(WORKER)
    for text in ("a", "stop", "b", "c"):
        w.post_message(text)
    print("after close(): exit code", await w.wait(), "- discarded:", w.statistics().discarded)
    print("replies:", [reply async for reply in w.messages()])


if __name__ == "__main__":
    asyncio.run(main())
