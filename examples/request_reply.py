"""Request/reply: ``await w.request(data)`` returns what the worker's handler returns, or raises."""

import asyncio
import pathlib

from arkworker import ThreadWorker

WORKER = pathlib.Path(__file__).parent / "workers" / "calc.py"


async def main() -> None:
    async with ThreadWorker(WORKER) as w:
        print("add:", await w.request(("add", 1, 2, 3)))

        # Requests may be in flight together; the worker handles them one at a time, in order.
        print("gathered:", await asyncio.gather(*(w.request(("add", n, n)) for n in range(5))))

        # The handler's exception is raised here, with its original type and the worker traceback.
        try:
            await w.request(("div", 1, 0))
        except ZeroDivisionError as exc:
            print("div raised", type(exc).__name__, "from the worker:", exc)

        # A timeout (or cancelling the awaiting task) cancels the handler in the worker.
        try:
            await w.request(("sleep", 30), timeout=0.1)
        except TimeoutError:
            print("sleep timed out")
        print("handlers cancelled in the worker:", await w.request(("cancelled",)))
    # A request's error belongs to its requester: it is not a worker error.
    print("worker exited with code", w.exit_code)


if __name__ == "__main__":
    asyncio.run(main())
