"""Backpressure: awaiting ``post_message`` keeps each inbox near ``max_inbox``, in both directions."""

import asyncio
import pathlib

from arkworker import ThreadWorker

WORKER = pathlib.Path(__file__).parent / "workers" / "counter.py"
LIMIT = 50
COUNT = 2_000


async def main() -> None:
    async with ThreadWorker(WORKER, max_inbox=LIMIT) as w:
        # Host -> worker: each await returns at once while the worker's inbox holds at most LIMIT
        # messages, and waits otherwise (like StreamWriter.drain).
        deepest = 0
        for i in range(COUNT):
            await w.post_message(i)
            deepest = max(deepest, w.statistics().inbox_depth)
        print("worker total:", await w.request(("total", 0)), "expected:", sum(range(COUNT)))
        print(f"worker inbox stayed bounded: {deepest <= LIMIT + 1}")

        # Worker -> host: the worker awaits its post_message too, so a slow reader holds it back.
        producing = asyncio.create_task(w.request(("produce", COUNT)))
        received, deepest = 0, 0
        async for _ in w.messages():
            deepest = max(deepest, w.statistics().host_inbox_depth)
            received += 1
            if received % 100 == 0:
                await asyncio.sleep(0)  # a slow consumer
            if received == COUNT:
                break
        print("host received:", received, "worker says:", await producing)
        print(f"host inbox stayed bounded: {deepest <= LIMIT + 1}")


if __name__ == "__main__":
    asyncio.run(main())
