"""Objects shared by reference between workers: ``@sendable`` classes and ``AsyncLock``."""

from __future__ import annotations

import asyncio
import collections
import threading
from types import TracebackType
from typing import Any, TypeVar

from . import _clone, _transport
from ._errors import ParameterError

C = TypeVar("C", bound=type)


def sendable(cls: C) -> C:
    """Mark a class as sendable: ``post_message_with_shared_sendable`` passes its instances by reference.

    ``post_message`` still copies them. Guard state that several workers touch with an ``AsyncLock``.
    """
    if not isinstance(cls, type):
        raise ParameterError(f"@sendable decorates a class, not {type(cls).__name__}")

    def __reduce_ex__(self: object, protocol: Any) -> Any:  # noqa: N807 - the pickle hook
        if _clone.sharing():
            return _clone.reduce_shared(self)
        return object.__reduce_ex__(self, protocol)

    cls.__reduce_ex__ = __reduce_ex__  # type: ignore[assignment,method-assign]
    cls.__arkworker_sendable__ = True  # type: ignore[attr-defined]
    return cls


def is_sendable(obj: object) -> bool:
    """True iff ``obj`` is an instance of a ``@sendable`` class."""
    return getattr(type(obj), "__arkworker_sendable__", False) is True


class AsyncLock:
    """A lock that the host loop and any worker loop can ``async with``; it always crosses by reference.

    Waiters are served first come, first served, whichever loop they wait on. Not reentrant.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()  # guards the two fields below
        self._locked = False
        self._waiters: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = (
            collections.deque()
        )

    def locked(self) -> bool:
        """True iff some task holds the lock."""
        return self._locked

    async def acquire(self) -> None:
        """Wait until the lock is free and take it. Call on any event loop."""
        loop = asyncio.get_running_loop()
        with self._mutex:
            if not self._locked:
                self._locked = True
                return
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, future))
        try:
            await future
        except asyncio.CancelledError:
            with self._mutex:
                try:
                    self._waiters.remove((loop, future))
                except ValueError:
                    # Ownership was already handed to us: pass it on.
                    self._release_locked()
            raise

    def release(self) -> None:
        """Release the lock, handing it to the oldest waiter on whatever loop it waits."""
        with self._mutex:
            if not self._locked:
                raise RuntimeError("AsyncLock.release() called on an unlocked lock")
            self._release_locked()

    def _release_locked(self) -> None:
        # Caller holds self._mutex and the lock is held; ownership passes directly to a waiter.
        while self._waiters:
            loop, future = self._waiters.popleft()
            if _transport.resolve_soon(loop, future):
                return
        self._locked = False

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __reduce__(self) -> Any:
        reduction = _clone.reduce_shared(self)
        if reduction is None:
            raise TypeError("an AsyncLock crosses between workers by reference and cannot be pickled")
        return reduction
