"""How many workers may live at once, process-wide, and what happens to live ones at interpreter exit."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable

from ._errors import ParameterError, WorkerInitializationError
from ._transport import WorkerThread

logger = logging.getLogger("arkworker")

DEFAULT_MAX_WORKERS = 64
EXIT_TIMEOUT = 5.0
"""Seconds that interpreter exit waits, in all, for live workers to finish terminating."""


class _Slot:
    __slots__ = ("abandoned", "name", "stop", "transport")

    def __init__(self, transport: WorkerThread, stop: Callable[[], object], name: str) -> None:
        self.transport = transport
        self.stop = stop
        self.name = name
        self.abandoned = False  # its host loop ended, waited for it in vain and reported it


_lock = threading.Lock()  # guards the two names below: workers may be created on many threads
_max_workers = DEFAULT_MAX_WORKERS
# The slots taken, oldest first. A slot goes when its host has seen its thread end (release), or, for a
# worker whose exit no host loop took, when a new worker needs the room.
_slots: dict[WorkerThread, _Slot] = {}


def set_max_workers(n: int) -> None:
    """Allow at most ``n`` live workers at once, process-wide, nested workers included (default 64)."""
    global _max_workers  # noqa: PLW0603 - the process-wide limit
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ParameterError(f"set_max_workers needs an int of at least 1, not {n!r}")
    with _lock:
        _max_workers = n


def admit(transport: WorkerThread, stop: Callable[[], object], name: str) -> None:
    """Take a slot for a worker about to start, or raise ``WorkerInitializationError``.

    A slot is free again only once its thread has really ended.
    """
    with _lock:
        if len(_slots) >= _max_workers:  # ended workers nobody released: O(n), only when it matters
            for ended in [slot.transport for slot in _slots.values() if not slot.transport.is_alive()]:
                del _slots[ended]
        if len(_slots) >= _max_workers:
            raise WorkerInitializationError(
                f"cannot start worker {name}: {len(_slots)} workers are alive and the limit is "
                f"{_max_workers} (see arkworker.set_max_workers)"
            )
        _slots[transport] = _Slot(transport, stop, name)


def release(transport: WorkerThread) -> None:
    """The worker's thread has ended (joined): its slot is free, and what it holds can go."""
    with _lock:
        _slots.pop(transport, None)


def abandon(transport: WorkerThread) -> None:
    """Its host loop has ended, waited for the worker in vain and reported it: exit will not wait again."""
    with _lock:
        slot = _slots.get(transport)
        if slot is not None:
            slot.abandoned = True


def _stop_all(timeout: float = EXIT_TIMEOUT) -> None:
    # Interpreter exit: ask every live worker to terminate, wait a bounded time, report the stuck ones.
    # Under the lock: a host closes its worker's transport only after releasing its slot.
    with _lock:
        slots = [slot for slot in _slots.values() if slot.transport.is_alive()]
        for slot in slots:
            slot.stop()
    deadline = time.monotonic() + timeout
    for slot in slots:
        if slot.abandoned:
            continue
        if not slot.transport.join(max(0.0, deadline - time.monotonic())):
            logger.warning(
                "interpreter exit: worker %s did not finish within %.1f s and was abandoned",
                slot.name,
                timeout,
                extra={"worker": slot.name},
            )


def _forget_after_fork() -> None:
    # A forked child has none of its parent's worker threads; its slots start empty.
    global _lock  # noqa: PLW0603 - a lock held at the fork would never be released in the child
    _lock = threading.Lock()
    _slots.clear()


atexit.register(_stop_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
