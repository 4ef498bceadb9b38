"""The buffer that ``messages()`` reads: messages that arrived while no handler was set."""

from __future__ import annotations

import asyncio
import collections
import weakref
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
        # The live readers, by id. A reader holds the message it took last until it asks for the next one
        # or is dropped (a loop it broke out of). Only the worker's exit waits for readers.
        self._readers: dict[int, weakref.ref[MessageIterator[Any]]] = {}
        self._waking = 0  # readers woken for a message that have not run yet
        self._idle: asyncio.Future[None] | None = None
        self._tasks: weakref.WeakSet[asyncio.Task[Any]] | None = None  # the readers' tasks, watched

    def __len__(self) -> int:
        return len(self._items) if self._items else 0

    def push(self, data: object) -> None:
        """Add a message and wake the oldest waiting reader."""
        if self._items is None:
            self._items = collections.deque()
        self._items.append(data)
        self._wake_one()

    def close(self, *, discard: bool = False) -> None:
        """No more messages will come: readers finish once the buffer is empty.

        With ``discard`` the messages still waiting are dropped (they stay unmarked, so they are counted).
        """
        self._closed = True
        if discard and self._items:
            self._items.clear()
        while self._getters:
            self._wake_one()
        self._check_idle()

    def settled(self) -> bool:
        """Empty, and no reader holds a message: ``readers_done()`` would not wait."""
        return not self._items and self._is_idle()

    async def readers_done(self) -> None:
        """Once closed: wait until no reader holds a message and none is left that a reader would take."""
        if not self._is_idle():
            self._idle = asyncio.get_running_loop().create_future()
            await self._idle

    def _is_idle(self) -> bool:
        for ref in self._readers.values():
            reader = ref()
            task = reader._task if reader is not None and reader._holding else None
            if task is not None and not task.done():
                return False
        return not self._items or not (self._getters or self._waking)

    def _check_idle(self) -> None:
        if self._idle is not None and not self._idle.done() and self._is_idle():
            self._idle.set_result(None)

    def _watch(self, task: asyncio.Task[Any]) -> None:
        """A reader took a message in ``task``: when that task ends, the reader holds nothing."""
        if self._tasks is None:
            self._tasks = weakref.WeakSet()
        if task not in self._tasks:
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._check_idle()

    def _add_reader(self, reader: MessageIterator[Any]) -> None:
        self._readers[id(reader)] = weakref.ref(reader, self._dropped)

    def _dropped(self, ref: weakref.ref[MessageIterator[Any]]) -> None:
        for key, value in list(self._readers.items()):
            if value is ref:
                del self._readers[key]
        self._check_idle()

    def _wake_one(self) -> None:
        while self._getters:
            getter = self._getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                self._waking += 1
                return

    async def get(self) -> Any:
        """The next message; raises ``StopAsyncIteration`` once closed and empty."""
        while not self._items:
            if self._closed:
                self._check_idle()
                raise StopAsyncIteration
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            self._check_idle()  # a reader waiting with nothing left: the exit need not wait for it
            try:
                await getter
            except asyncio.CancelledError:
                if getter in self._getters:
                    self._getters.remove(getter)
                elif not getter.cancelled():
                    self._waking -= 1
                    if self._items:
                        self._wake_one()  # pass the wake-up meant for us on to the next reader
                    self._check_idle()
                raise
            self._waking -= 1
        self._on_take()
        return self._items.popleft()


class MessageIterator(Generic[T]):
    """``async for data in worker.messages()``: each message once, in order, until the worker ends."""

    __slots__ = ("__weakref__", "_buffer", "_holding", "_task")

    def __init__(self, buffer: MessageBuffer) -> None:
        self._buffer = buffer
        self._holding = False  # True from taking a message until asking for the next one...
        self._task: asyncio.Task[Any] | None = None  # ...in this task, unless the task ended
        buffer._add_reader(self)

    def __aiter__(self) -> MessageIterator[T]:
        return self

    async def __anext__(self) -> T:
        self._holding = False  # the buffer checks whether the exit may go on only if get() must wait
        data: T = await self._buffer.get()
        task = asyncio.current_task()
        if task is not self._task and task is not None:
            self._task = task
            self._buffer._watch(task)
        self._holding = True
        return data
