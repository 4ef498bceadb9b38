"""Blocking work in a worker: the host loop keeps ticking while the worker sleeps and computes."""

import asyncio
import pathlib

from arkworker import ThreadWorker

WORKER = pathlib.Path(__file__).parent / "workers" / "blocking.py"


class Ticker:
    """Counts how often the host loop gets to run a task that wakes up every few milliseconds."""

    def __init__(self) -> None:
        self.ticks = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(0.005)
            self.ticks += 1


async def main() -> None:
    ticker = Ticker()
    ticking = asyncio.create_task(ticker.run())
    try:
        async with ThreadWorker(WORKER, name="blocking") as w:
            for job in ("sleep", "compute"):
                before = ticker.ticks
                result = await w.request(job)  # the worker blocks; this only awaits
                ticks = ticker.ticks - before
                print(f"{job}: {result}")
                print(f"host stayed responsive during {job}: {ticks > 0} ({ticks} ticks)")
    finally:
        ticking.cancel()
    print("worker exited with code", w.exit_code)


if __name__ == "__main__":
    asyncio.run(main())
