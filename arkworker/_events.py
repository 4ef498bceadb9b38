"""Events, the listener registry both sides share, and the small value types around them.

Everything here is loop-confined: an ``EventTarget`` belongs to one side (the host handle or the worker's
port) and is only touched on that side's event loop thread.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from ._errors import ParameterError

T = TypeVar("T")

Callback = Callable[[Any], Any]
"""A handler or listener: a plain function or an ``async def``, called with the event's payload."""


class WorkerState(enum.IntEnum):
    """The life of a worker; it only ever moves forward."""

    __str__ = enum.Enum.__str__

    STARTING = 0
    """The thread is starting or the script's top level is running."""
    RUNNING = 1
    """The script's top level finished; messages are being handled."""
    TERMINATING = 2
    """``terminate()``, ``close()`` or a fatal error began the exit."""
    TERMINATED = 3
    """The thread has ended."""


class ThreadWorkerPriority(enum.IntEnum):
    """The OS scheduling priority of a worker thread (ArkTS ``ThreadWorkerPriority``)."""

    HIGH = 0
    """Nice 5 below the creating thread, where the OS permits."""
    MEDIUM = 1
    """The creating thread's nice value."""
    LOW = 2
    """Nice 5 above the creating thread (at most 19)."""
    IDLE = 3
    """Nice 19, the weakest."""
    DEADLINE = 4
    """Nice 10 below the creating thread, where the OS permits."""
    VIP = 5
    """Nice 15 below the creating thread, where the OS permits."""


class Event:
    """An event: ``type`` names it and ``time_stamp`` is 0.0 (ArkTS leaves it unsupported too).

    Build custom ones for ``dispatch_event``: ``Event("progress")``.
    """

    __slots__ = ("time_stamp", "type")

    def __init__(self, type: str, time_stamp: float = 0.0) -> None:  # noqa: A002 - the ArkTS name
        if not isinstance(type, str):
            raise ParameterError(f"event type must be a str, not {_typename(type)}")
        if not isinstance(time_stamp, (int, float)) or isinstance(time_stamp, bool):
            raise ParameterError(f"time_stamp must be a number, not {_typename(time_stamp)}")
        self.type = type
        self.time_stamp = time_stamp

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(type={self.type!r})"


class MessageEvent(Event, Generic[T]):
    """A message; ``data`` is what the other side posted. Its ``type`` is always ``"message"``."""

    __slots__ = ("data",)
    # One per message: the constant fields are class attributes, so building one sets a single slot.
    type = "message"
    time_stamp = 0.0

    def __init__(self, data: T) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"MessageEvent(data={self.data!r})"


class ErrorEvent(Event):
    """An error: ``message`` is ``"Type: text"``, ``filename``/``lineno``/``colno`` locate the user code
    that raised (``colno`` is 1-based, 0 when unknown) and ``error`` is the exception object."""

    __slots__ = ("colno", "error", "filename", "lineno", "message")

    def __init__(
        self,
        message: str,
        filename: str,
        lineno: int,
        colno: int,
        error: BaseException | None,
        type: str = "error",  # noqa: A002 - the ArkTS name
    ) -> None:
        self.type = type
        self.time_stamp = 0.0
        self.message = message
        self.filename = filename
        self.lineno = lineno
        self.colno = colno
        self.error = error

    def __repr__(self) -> str:
        return f"ErrorEvent({self.message!r}, {self.filename!r}, lineno={self.lineno})"


@dataclass(frozen=True, slots=True)
class WorkerStatistics:
    """A snapshot of one worker, taken on the host loop by ``ThreadWorker.statistics()``."""

    name: str | None
    """The worker's name."""
    state: WorkerState
    """The worker's state, as the host saw it."""
    messages_sent: int
    """Messages and requests the host posted to the worker."""
    messages_received: int
    """Messages and replies the host received from the worker."""
    requests: int
    """Requests sent so far."""
    pending_requests: int
    """Requests still waiting for a reply."""
    inbox_depth: int
    """Messages posted to the worker and not yet handled there."""
    host_inbox_depth: int
    """Messages the worker posted and the host has not yet handled or read."""
    errors: int
    """Worker errors and message errors reported to the host."""
    discarded: int
    """Inbound messages the worker discarded when it closed or failed to start."""
    exit_code: int | None
    """The exit code, or None while the worker has not exited."""


def _typename(value: object) -> str:
    return type(value).__name__


def check_callback(fn: object, what: str) -> None:
    """Raise ``ParameterError`` unless ``fn`` can be a handler."""
    if not callable(fn):
        raise ParameterError(f"{what} must be callable, not {_typename(fn)}")


class Handler:
    """A handler property (``onmessage`` and the like) that only accepts a callable or ``None``."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._attr = "_" + name
        self._name = name

    def __get__(self, obj: object, owner: type | None = None) -> Callback | None:
        if obj is None:
            return self  # type: ignore[return-value]
        result: Callback | None = getattr(obj, self._attr, None)
        return result

    def __set__(self, obj: EventTarget, fn: Callback | None) -> None:
        obj._check_thread()
        if fn is not None:
            check_callback(fn, self._name)
        setattr(obj, self._attr, fn)
        obj._callbacks_changed()


class _Listener:
    __slots__ = ("fn", "once")

    def __init__(self, fn: Callback, once: bool) -> None:
        self.fn = fn
        self.once = once


PLAIN_RESULTS: frozenset[type] = frozenset({type(None), bool, int, float, str, bytes, tuple, list, dict})
"""Types a handler's result can have that are surely not awaitable: no need to ask ``inspect``."""


def pending(result: object) -> bool:
    """True iff a callback's ``result`` is an awaitable to wait for. A future that has succeeded already is
    not: ``post_message`` returns one while there is room, so ``onmessage = lambda e: port.post_message(x)``
    is a plain handler, not one that holds the next message for a task and a loop pass."""
    if not inspect.isawaitable(result):
        return False
    return not (
        isinstance(result, asyncio.Future)
        and result.done()
        and not result.cancelled()
        and result.exception() is None
    )


CALLBACK_ERRORS = (Exception, asyncio.CancelledError)
"""What a plain callback may raise as its own error. A ``CancelledError`` raised by one (``.result()`` of a
cancelled future, say) is one too: no task is being cancelled while a plain callback runs."""


class EventTarget:
    """Handler properties and listeners of one side. Call only on that side's loop thread."""

    # Where the handler properties keep their callbacks: read directly on hot paths.
    _onmessage: Callback | None = None
    _onmessageerror: Callback | None = None
    _onerror: Callback | None = None

    onmessage = Handler()
    """Called with a ``MessageEvent`` for each message from the other side (a sync or async function).

    In a worker, its return value answers a request."""
    onmessageerror = Handler()
    """Called with an ``ErrorEvent`` (its ``error`` a ``SerializationError``) when a message cannot be
    copied or rebuilt on this side."""
    onerror = Handler()
    """Called with the ``ErrorEvent`` of a worker error. On the host, without ``onallerrors``, the worker
    then terminates; in the worker it runs before the host hears of the error."""

    # What a callback may raise for this side's error path to take; anything else leaves the dispatch.
    _callback_errors: ClassVar[tuple[type[BaseException], ...]] = CALLBACK_ERRORS

    # Event types whose ``dispatch_event`` also calls a handler property.
    _PROPERTY_FOR: ClassVar[dict[str, str]] = {
        "message": "onmessage",
        "messageerror": "onmessageerror",
        "error": "onerror",
    }

    def __init__(self) -> None:
        self._listeners: dict[str, list[_Listener]] = {}
        # The callbacks of each event type, while they stay the same (no once listener among them).
        self._cache: dict[str, tuple[Callback, ...]] = {}
        # The hot path's shortcut: the one callback of "message" while there is exactly one, else None.
        self._sole_message_callback: Callback | None = None

    def _callbacks_changed(self) -> None:
        self._cache.clear()
        self._sole_message_callback = None

    def _forget_callbacks(self) -> None:
        """The end of this side's life: drop every handler and listener. Handlers often close over their
        target; dropped, they leave no cycle, and the target is freed without the garbage collector."""
        self._listeners.clear()
        self._onmessage = self._onmessageerror = self._onerror = None
        self._callbacks_changed()

    def _check_usable(self) -> None:
        """Raise if this side may no longer be used, or not from this thread; overridden by both sides."""

    def _check_thread(self) -> None:
        """Raise if this side may not be used from this thread; overridden by the port."""

    def on(self, type: str, fn: Callback) -> None:  # noqa: A002 - the ArkTS name
        """Add a listener for ``type``; a function already listening to ``type`` is not added twice."""
        self._add(type, fn, once=False)

    add_event_listener = on
    """The same as ``on``."""

    def once(self, type: str, fn: Callback) -> None:  # noqa: A002 - the ArkTS name
        """Add a listener that is removed after its first call."""
        self._add(type, fn, once=True)

    def off(self, type: str, fn: Callback | None = None) -> None:  # noqa: A002 - the ArkTS name
        """Remove ``fn`` from ``type``, or every listener of ``type`` when ``fn`` is omitted."""
        self._check_usable()
        _check_type(type)
        self._callbacks_changed()
        if fn is None:
            self._listeners.pop(type, None)
            return
        check_callback(fn, "listener")
        listeners = self._listeners.get(type)
        if listeners:
            listeners[:] = [entry for entry in listeners if entry.fn != fn]

    remove_event_listener = off
    """The same as ``off``."""

    def remove_all_listener(self) -> None:
        """Remove every listener of every type (handler properties stay)."""
        self._check_usable()
        self._listeners.clear()
        self._callbacks_changed()

    def dispatch_event(self, event: Event) -> bool:
        """Call the callbacks of ``event.type`` in order, as a real event would be dispatched.

        They run now, synchronously, up to the first ``async`` one; that one is awaited in a task, and the
        rest follow it in order. ``message``, ``messageerror`` and ``error`` also call the matching
        handler property.
        """
        self._check_usable()
        if not isinstance(event, Event):
            raise ParameterError(f"dispatch_event needs an Event, not {_typename(event)}")
        rest = call_in_order(
            self._callbacks(event.type), event, self._report_callback_error, self._callback_errors
        )
        if rest is not None:
            schedule(asyncio.get_running_loop(), rest)
        return True

    def _add(self, type: str, fn: Callback, *, once: bool) -> None:  # noqa: A002
        self._check_usable()
        _check_type(type)
        check_callback(fn, "listener")
        listeners = self._listeners.setdefault(type, [])
        if all(entry.fn != fn for entry in listeners):
            listeners.append(_Listener(fn, once))
            self._callbacks_changed()

    def _callbacks(self, type: str) -> tuple[Callback, ...]:  # noqa: A002
        """The handler property (if any) then the listeners of ``type``; ``once`` listeners are removed."""
        cached = self._cache.get(type)
        if cached is not None:
            return cached
        found: list[Callback] = []
        prop = self._PROPERTY_FOR.get(type)
        if prop is not None:
            handler = getattr(self, prop)
            if handler is not None:
                found.append(handler)
        listeners = self._listeners.get(type)
        if listeners:
            found.extend(entry.fn for entry in listeners)
            if any(entry.once for entry in listeners):
                listeners[:] = [entry for entry in listeners if not entry.once]
                return tuple(found)
        self._cache[type] = result = tuple(found)
        if type == "message" and len(result) == 1:
            self._sole_message_callback = result[0]
        return result

    def _report_callback_error(self, exc: BaseException) -> None:
        """Send an exception raised by a callback down this side's error path."""
        raise NotImplementedError


def call_in_order(
    callbacks: Sequence[Callback],
    payload: object,
    report: Callable[[BaseException], None],
    catch: type[BaseException] | tuple[type[BaseException], ...] = CALLBACK_ERRORS,
) -> Coroutine[Any, Any, None] | None:
    """Call each callback with ``payload``; if one returns an awaitable, return an awaitable for the rest.

    An exception (of the kinds in ``catch``) from a callback goes to ``report`` and never stops the others.
    """
    for index, fn in enumerate(callbacks):
        try:
            result = fn(payload)
        except catch as exc:  # reported, never lost
            report(exc)
            continue
        if result is not None and pending(result):
            return await_in_order(result, callbacks[index + 1 :], payload, report, catch)
    return None


async def await_in_order(
    first: Awaitable[Any],
    rest: Sequence[Callback],
    payload: object,
    report: Callable[[BaseException], None],
    catch: type[BaseException] | tuple[type[BaseException], ...] = Exception,
) -> None:
    """Await ``first``, then call and await each of ``rest`` with ``payload``.

    An exception of the kinds in ``catch`` goes to ``report`` and never stops the others, and so does a
    ``CancelledError`` that ends a callback while this task is not being cancelled: the callback's own
    (it awaited a cancelled future, say). A cancellation of this task stops it.
    """
    try:
        await first
    except asyncio.CancelledError as exc:
        if _being_cancelled():
            raise
        report(exc)
    except catch as exc:  # reported, never lost
        report(exc)
    for fn in rest:
        try:
            result = fn(payload)
            if result is not None and inspect.isawaitable(result):
                await result
        except asyncio.CancelledError as exc:
            if _being_cancelled():
                raise
            report(exc)
        except catch as exc:  # reported, never lost
            report(exc)


def _being_cancelled() -> bool:
    """True iff the running task has a cancellation pending (or cannot tell: not an asyncio ``Task``)."""
    cancelling = getattr(asyncio.current_task(), "cancelling", None)
    return cancelling is None or cancelling() > 0


def _check_type(type: object) -> None:  # noqa: A002
    if not isinstance(type, str):
        raise ParameterError(f"event type must be a str, not {_typename(type)}")


# Tasks nobody awaits (async callbacks of dispatch_event and of post_message's onmessageerror).
_background: set[asyncio.Task[None]] = set()


def schedule(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` as a task of ``loop`` that nobody awaits, kept alive until it finishes."""
    task = loop.create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
