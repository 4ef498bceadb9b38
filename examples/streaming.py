"""Streaming: a worker posts results one by one and the host reads them with ``async for``."""

import asyncio
import pathlib
from collections.abc import AsyncIterator

from arkworker import ThreadWorker

WORKER = pathlib.Path(__file__).parent / "workers" / "squares.py"


async def squares(w: ThreadWorker, n: int) -> AsyncIterator[int]:
    """Ask the worker for n squares and yield them as they arrive, up to the end marker."""
    await w.post_message(n)
    async for square in w.messages():
        if square is None:
            return
        yield square


async def main() -> None:
    async with ThreadWorker(WORKER) as w:
        async for square in squares(w, 4):
            print("received", square)
        # The same worker serves a second stream; nothing of the first one is left over.
        print("second stream:", [square async for square in squares(w, 6)])
    print("worker exited with code", w.exit_code)


if __name__ == "__main__":
    asyncio.run(main())
