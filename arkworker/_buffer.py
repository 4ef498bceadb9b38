"""The buffer that ``messages()`` reads: messages that arrived while no handler was set."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class MessageBuffer:
    """Messages waiting for a ``messages()`` reader. Loop-confined: use on its owner's loop only."""

    def __init__(self, on_take: Callable[[], object]) -> None:
        # Most workers never buffer a message: both queues are made on first use.
        self._items: collections.deque[Any] | None = None
        self._getters: list[asyncio.Future[None]] = []
        self._closed = False
        self._on_take = on_take

    def __len__(self) -> int:
        return len(self._items) if self._items else 0

    def push(self, data: object) -> None:
        """Add a message and wake the oldest waiting reader."""
        if self._items is None:
            self._items = collections.deque()
        self._items.append(data)
        self._wake_one()

    def close(self) -> None:
        """No more messages will come: readers finish once the buffer is empty."""
        self._closed = True
        while self._getters:
            self._wake_one()

    def _wake_one(self) -> None:
        while self._getters:
            getter = self._getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                return

    async def get(self) -> Any:
        """The next message; raises ``StopAsyncIteration`` once closed and empty."""
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except asyncio.CancelledError:
                if getter in self._getters:
                    self._getters.remove(getter)
                elif not getter.cancelled() and self._items:
                    self._wake_one()  # pass the wake-up meant for us on to the next reader
                raise
        self._on_take()
        return self._items.popleft()


class MessageIterator(Generic[T]):
    """``async for data in worker.messages()``: each message once, in order, until the worker ends."""

    __slots__ = ("_buffer",)

    def __init__(self, buffer: MessageBuffer) -> None:
        self._buffer = buffer

    def __aiter__(self) -> MessageIterator[T]:
        return self

    async def __anext__(self) -> T:
        data: T = await self._buffer.get()
        return data
