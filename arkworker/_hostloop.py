"""The end of a host loop: workers still alive when their host's event loop shuts down are terminated.

``asyncio.run``, ``asyncio.Runner``, ``uvloop.run`` and pytest-asyncio finish a loop by closing its
async generators (``loop.shutdown_asyncgens``). Each host loop gets one watching generator; closing it
terminates the loop's live workers and waits, bounded, for their exit, so that the host does not leave
threads behind that could no longer deliver anything to it. A loop closed without that step leaves its
workers to interpreter exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import weakref
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from ._limits import EXIT_TIMEOUT, abandon
from ._transport import unwatch_doorbell

if TYPE_CHECKING:
    from ._worker import ThreadWorker

logger = logging.getLogger("arkworker")


# The live workers of each host loop, and the generator that terminates them when the loop ends. A live
# worker's running thread holds its handle, so the workers are held weakly: a handle whose thread ended
# unseen (its loop closed by hand) may go. The generator holds its loop (asyncio's finalizer hook), so an
# entry goes at its loop's end, or, for a loop closed by hand without that end, when a worker is next made.
_watched: dict[asyncio.AbstractEventLoop, tuple[weakref.WeakSet[ThreadWorker], object]] = {}


def track(loop: asyncio.AbstractEventLoop, worker: ThreadWorker) -> None:
    """Host loop thread, while ``loop`` runs: terminate ``worker`` if ``loop`` ends before it does."""
    entry = _watched.get(loop)
    if entry is None:
        for closed in [other for other in list(_watched) if other.is_closed()]:
            _watched.pop(closed, None)
        workers: weakref.WeakSet[ThreadWorker] = weakref.WeakSet()
        watcher = _watch(workers)
        # One step registers the generator with the running loop (its first-iteration hook).
        with contextlib.suppress(StopIteration):
            watcher.asend(None).send(None)
        entry = _watched[loop] = (workers, watcher)
    entry[0].add(worker)


def untrack(loop: asyncio.AbstractEventLoop, worker: ThreadWorker) -> None:
    """Host loop thread: ``worker`` has exited."""
    entry = _watched.get(loop)
    if entry is not None:
        entry[0].discard(worker)


async def _watch(workers: weakref.WeakSet[ThreadWorker]) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + EXIT_TIMEOUT
        stuck: set[ThreadWorker] = set()
        # Until none is left: a callback of an exit (an async onexit) may start a new worker meanwhile.
        while live := [worker for worker in workers if worker not in stuck]:
            exits = {asyncio.ensure_future(worker.terminate()): worker for worker in live}
            _, late = await asyncio.wait(exits, timeout=max(0.0, deadline - loop.time()))
            for future in late:
                future.cancel()
                stuck.add(exits[future])
                abandon(exits[future]._transport)  # reported here: interpreter exit does not wait again
                logger.warning(
                    "host loop ended: worker %s did not exit within %.1f s",
                    exits[future],
                    EXIT_TIMEOUT,
                    extra={"worker": repr(exits[future])},
                )
        _watched.pop(loop, None)
        if not stuck:  # a stuck worker may still post, and a loop may run on after this: it stays woken
            unwatch_doorbell(loop, loop_ended=True)


def _forget_after_fork() -> None:
    # A forked child has none of its parent's worker threads: its loops' ends must not wait for them.
    for workers, _ in _watched.values():
        workers.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
