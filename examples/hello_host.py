"""The seed, ported: post "hello world", await the reply, terminate. No polling anywhere."""

import asyncio
import pathlib

from arkworker import ThreadWorker

WORKER = pathlib.Path(__file__).parent / "workers" / "hello.py"


async def main() -> None:
    async with ThreadWorker(WORKER) as w:
        await w.post_message("hello world")
        async for reply in w.messages():
            print("worker:: res is", reply)  # success
            break
    # leaving the block terminated the worker and waited for its exit
    print("worker exited with code", w.exit_code)


if __name__ == "__main__":
    asyncio.run(main())
