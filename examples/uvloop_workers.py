"""uvloop: worker loops on uvloop with ``loop_factory="uvloop"``; the host loop is your choice."""

import asyncio
import pathlib

from arkworker import ThreadWorker

WORKER = pathlib.Path(__file__).parent / "workers" / "loop_info.py"


async def main() -> None:
    print("host loop:", type(asyncio.get_running_loop()).__name__)
    async with (
        ThreadWorker(WORKER, loop_factory="uvloop") as fast,
        ThreadWorker(WORKER) as default,
    ):
        print("uvloop worker:", await fast.request(None))
        print("default worker:", await default.request(None))


if __name__ == "__main__":
    asyncio.run(main())  # or uvloop.run(main()) to put the host loop on uvloop as well
