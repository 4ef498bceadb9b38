"""anyio: task groups and cancel scopes cancel requests and ``messages()`` iteration cleanly."""

import asyncio
import pathlib

import anyio

from arkworker import ThreadWorker

WORKER = pathlib.Path(__file__).parent / "workers" / "calc.py"


async def main() -> None:
    async with ThreadWorker(WORKER) as w:
        # A cancel scope's deadline cancels the request, and with it the handler in the worker.
        with anyio.move_on_after(0.1) as scope:
            await w.request(("sleep", 30))
        print("request cancelled by the scope:", scope.cancelled_caught)

        # A task group runs requests concurrently and cancels a reader that would wait forever.
        results = {}

        async def ask(n: int) -> None:
            results[n] = await w.request(("add", n, n))

        async def read_forever() -> None:
            async for message in w.messages():  # nothing is ever posted: this only waits
                print("unexpected:", message)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read_forever)
            async with anyio.create_task_group() as asks:
                for n in range(3):
                    asks.start_soon(ask, n)
            tg.cancel_scope.cancel()  # the requests are answered: stop the reader
        print("task group results:", dict(sorted(results.items())))
        print("handlers cancelled in the worker:", await w.request(("cancelled",)))
    print("worker exited with code", w.exit_code)


if __name__ == "__main__":
    asyncio.run(main())
