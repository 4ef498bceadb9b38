"""Helpers the test files share: waiting on worker threads and reading messages, always bounded."""

from __future__ import annotations

import asyncio
import threading

from arkworker import ThreadWorker

TIMEOUT = 5


def echo(port):
    """Worker callable: post every message straight back."""
    port.onmessage = lambda e: port.post_message(e.data)


def answer(port):
    """Worker callable: answer every request with the message itself."""
    port.onmessage = lambda e: e.data


def failing(port):
    """Worker callable: "boom" raises ValueError("bad input"); anything else is answered with "pong"."""

    def on_message(e):
        if e.data == "boom":
            raise ValueError("bad input")
        return "pong"

    port.onmessage = on_message


class LoopErrors:
    """What reached the host loop's exception handler (installed by the ``loop_errors`` fixture)."""

    def __init__(self) -> None:
        self.contexts: list[dict[str, object]] = []
        self.changed = asyncio.Event()

    def handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        self.contexts.append(context)
        self.changed.set()

    @property
    def exceptions(self) -> list[object]:
        return [context.get("exception") for context in self.contexts]

    async def wait_for(self, count: int) -> None:
        """Wait until at least ``count`` contexts arrived."""

        async def go() -> None:
            while len(self.contexts) < count:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(go(), TIMEOUT)


async def wait_thread(event: threading.Event) -> bool:
    """Wait for a threading.Event set in a worker thread without blocking the host loop."""
    return await asyncio.to_thread(event.wait, TIMEOUT)


async def take(w: ThreadWorker, n: int) -> list[object]:
    """Read exactly ``n`` messages from ``w.messages()``, failing after TIMEOUT seconds."""
    out: list[object] = []

    async def go() -> None:
        async for data in w.messages():
            out.append(data)
            if len(out) == n:
                return

    await asyncio.wait_for(go(), TIMEOUT)
    return out


async def drain(w: ThreadWorker) -> list[object]:
    """Everything left in ``w.messages()`` until it ends (the worker exited)."""

    async def go() -> list[object]:
        return [data async for data in w.messages()]

    return await asyncio.wait_for(go(), TIMEOUT)
