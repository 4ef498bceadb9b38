"""Nested workers: a worker creates a child worker of its own and passes requests down to it."""

import asyncio
import pathlib
import threading

from arkworker import ThreadWorker

WORKER = pathlib.Path(__file__).parent / "workers" / "parent.py"


async def main() -> None:
    async with ThreadWorker(WORKER, name="parent") as w:
        print(await w.request(21))
        print(await w.request(50))
    # Leaving the block terminated the parent, and the parent's exit terminated its child.
    print("parent exited with code", w.exit_code)
    print("worker threads left:", [t.name for t in threading.enumerate() if t.name.startswith("arkworker-")])


if __name__ == "__main__":
    asyncio.run(main())
