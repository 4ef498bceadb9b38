"""The items that travel between a host and its worker, besides plain messages.

A plain message travels as its payload alone (whatever ``_clone.pack`` returned); every other item is an
instance of one of these classes, so a receiver tells them apart with one type test. Messages, requests
and replies count toward an inbox's depth; the other items are control and travel uncounted.
"""

from __future__ import annotations

from asyncio import Future
from typing import Any, Final

from ._events import ErrorEvent
from ._transport import BlockingReply

# -- host to worker ---------------------------------------------------------------------------------


class Request:
    """A message whose handler's return value goes back as a ``Reply`` with the same id.

    ``answer`` is the host's future of that value. The worker only asks it ``done()`` before it starts the
    handler: a read of its state, which the host loop's thread alone sets (settled, nobody waits for the
    answer), so that a request given up before its handler started is dropped however soon the worker
    takes it. A ``Cancel`` item, which may come later, only cancels a handler that runs.
    """

    __slots__ = ("answer", "id", "payload")

    def __init__(self, id: int, payload: object, answer: Future[Any]) -> None:  # noqa: A002
        self.id = id
        self.payload = payload
        self.answer = answer


class Cancel:
    """Urgent: the host stopped waiting for request ``id``; drop it or cancel its handler."""

    __slots__ = ("id",)

    def __init__(self, id: int) -> None:  # noqa: A002
        self.id = id


class Terminate:
    """The last item of the inbox: everything before it is handled, then the worker exits.

    Put uncounted: it is not a message, so it never shows in the inbox depth.
    """

    __slots__ = ()


TERMINATE: Final = Terminate()

# -- worker to host ---------------------------------------------------------------------------------


class Started:
    """The script's top level finished: the worker is RUNNING. Always the worker's first item."""

    __slots__ = ()


STARTED: Final = Started()


class Closing:
    """The worker began to exit on its own (``close()``, a failed start, its coroutine returned)."""

    __slots__ = ()


CLOSING: Final = Closing()


class Reply:
    """The outcome of request ``id``: a payload, or the exception its handler raised."""

    __slots__ = ("error", "id", "payload")

    def __init__(self, id: int, payload: object, error: BaseException | None) -> None:  # noqa: A002
        self.id = id
        self.payload = payload
        self.error = error


class ErrorReport:
    """A worker error (``kind`` "error") or worker-side message error: "messageerror", or "not rebuilt"
    for a message the worker could not rebuild and no ``onmessageerror`` there took (the host reports it)."""

    __slots__ = ("event", "kind")

    def __init__(self, event: ErrorEvent, kind: str) -> None:
        self.event = event
        self.kind = kind


class GlobalCall:
    """Urgent: run ``instance.method(*args)`` on the host and answer through ``reply``."""

    __slots__ = ("args", "deadline", "instance", "method", "reply")

    def __init__(
        self, instance: str, method: str, args: object, reply: BlockingReply, deadline: float
    ) -> None:
        self.instance = instance
        self.method = method
        self.args = args
        self.reply = reply
        self.deadline = deadline


class Exited:
    """The worker thread's very last item; ``crash`` is an exception that escaped its event loop."""

    __slots__ = ("crash",)

    def __init__(self, crash: BaseException | None) -> None:
        self.crash = crash


TO_WORKER: Final = frozenset({Request, Terminate})
TO_HOST: Final = frozenset({Started, Closing, Reply, ErrorReport, Exited})
