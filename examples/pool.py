"""A pool: N workers running the same script, fed round-robin, results gathered in order."""

import asyncio
import itertools
import pathlib
from collections.abc import Awaitable, Iterable
from types import TracebackType
from typing import Any

from arkworker import ThreadWorker

WORKER = pathlib.Path(__file__).parent / "workers" / "square.py"


class Pool:
    """N workers running ``script``; each request goes to the next worker in turn."""

    def __init__(self, script: pathlib.Path, size: int) -> None:
        self.workers = [ThreadWorker(script, name=f"pool-{i}") for i in range(size)]
        self._turn = itertools.cycle(self.workers)

    def request(self, data: object) -> Awaitable[Any]:
        # Not async: the worker is picked now, in call order, not when the awaitable first runs.
        return next(self._turn).request(data)

    async def map(self, items: Iterable[object]) -> list[Any]:
        """One request per item, all in flight at once; the replies come back in item order."""
        return await asyncio.gather(*(self.request(item) for item in items))

    async def __aenter__(self) -> "Pool":
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.gather(*(w.terminate() for w in self.workers))


async def main() -> None:
    async with Pool(WORKER, size=3) as pool:
        replies = await pool.map(range(10))
    print("results:", [square for _, square in replies])
    for name in sorted({name for name, _ in replies}):
        print(f"{name} handled", [n for n, (who, _) in enumerate(replies) if who == name])
    print("exit codes:", [w.exit_code for w in pool.workers])


if __name__ == "__main__":
    asyncio.run(main())
