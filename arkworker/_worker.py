"""The host's side: ``ThreadWorker``, the handle on one worker.

Everything here runs on the host's event loop thread; the host-side state only changes there, so code
that does not await sees a stable worker.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import inspect
import itertools
import logging
import os
import sys
import time
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Generator
from types import TracebackType
from typing import Any, Generic, Self, cast

from . import _hostloop, _limits
from . import _protocol as proto
from ._buffer import MessageBuffer, MessageIterator
from ._clone import (
    INT_MAX,
    INT_MIN,
    NO_TRANSFER,
    SMALL_KINDS,
    SMALL_SIZE,
    Packed,
    moves_a_view,
    pack,
    transfer_list,
    unpack,
)
from ._errors import (
    GlobalCallMethodNotCallableError,
    GlobalCallObjectNotRegisteredError,
    ParameterError,
    SerializationError,
    WorkerCrashedError,
    WorkerInitializationError,
    WorkerNotRunningError,
    WorkerOptionError,
    describe,
)
from ._events import (
    PLAIN_RESULTS,
    Callback,
    EventTarget,
    Handler,
    MessageEvent,
    ThreadWorkerPriority,
    WorkerState,
    WorkerStatistics,
    await_in_order,
    call_in_order,
    pending,
    schedule,
)
from ._port import ThreadWorkerGlobalScope, current_port, error_event
from ._script import forget, resolve
from ._transport import WorkerThread, new_worker_loop

if sys.version_info >= (3, 13):
    from typing import TypeVar
else:  # TypeVar defaults (PEP 696) arrived in 3.13
    from typing_extensions import TypeVar

logger = logging.getLogger("arkworker")

_STARTING, _RUNNING = WorkerState.STARTING, WorkerState.RUNNING
_TERMINATING, _TERMINATED = WorkerState.TERMINATING, WorkerState.TERMINATED
_numbers = itertools.count(1)
_bare = object.__new__

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

SendT = TypeVar("SendT", default=Any)
"""What the host posts to the worker (``ThreadWorker[SendT, RecvT]``); anything by default."""
RecvT = TypeVar("RecvT", default=Any)
"""What the worker posts to the host; anything by default."""


class ThreadWorker(EventTarget, Generic[SendT, RecvT]):
    """A worker: a dedicated OS thread running its own event loop and ``script``.

    Create it inside async code: the thread starts at once, and messages posted before the script's top
    level finished are queued for it. Every method must be called on the host loop's thread, except
    ``request()`` (see there).

    ```python
    async with ThreadWorker("examples/workers/hello.py") as w:
        await w.post_message("hello world")
        async for reply in w.messages():
            print(reply)
            break
    ```

    :param script: a path to a ``.py`` file, a dotted module name, or a callable called as ``fn(port)``
        in the worker thread (a returned coroutine is the worker's life). A file or module runs in a fresh
        namespace per worker.
    :param name: the worker's name: ``worker_port.name``, the thread name ``arkworker-<name>`` and, best
        effort, the OS thread name (15 bytes).
    :param priority: a ``ThreadWorkerPriority`` applied to the thread as its OS scheduling priority.
    :param loop_factory: builds the worker's loop: ``asyncio.new_event_loop``'s by default (a
        subclass of asyncio's own, woken through an eventfd, where that is what it makes), or ``"uvloop"``.
    :param max_inbox: how many unhandled messages an inbox may hold before ``await post_message(...)``
        waits (both directions).
    :param clone: copy messages (the default); ``False`` passes every object by reference.
    :param max_message_size: the largest copied message, in pickled bytes.
    :raises ParameterError: if an argument has the wrong type or value (for an option, a
        ``WorkerOptionError``, which is also a ``WorkerInitializationError``).
    :raises InvalidScriptError: if the script file or module cannot be found.
    :raises WorkerInitializationError: without a running event loop, past the worker limit, or when
        ``loop_factory`` fails.
    """

    # A host callback's exception of any kind goes to the loop's exception handler (exit signals leave it).
    _callback_errors = (BaseException,)

    onallerrors = Handler()
    """Called with the ``ErrorEvent`` of every worker error; the worker keeps running. Takes precedence
    over ``onerror``."""
    onexit = Handler()
    """Called with the exit code once the worker's thread has ended."""

    def __init__(
        self,
        script: str | os.PathLike[str] | Callable[[ThreadWorkerGlobalScope], Any],
        *,
        name: str | None = None,
        priority: ThreadWorkerPriority | None = None,
        loop_factory: LoopFactory | str | None = None,
        max_inbox: int = 1024,
        clone: bool = True,
        max_message_size: int = 16 * 1024 * 1024,
    ) -> None:
        super().__init__()
        priority = _check_options(name, priority, max_inbox, clone, max_message_size)
        factory = _resolve_loop_factory(loop_factory)
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            raise WorkerInitializationError(
                "ThreadWorker() needs a running event loop on this thread: create it from async code"
            ) from None
        self._script = resolve(script)
        number = next(_numbers)
        self._name = name
        # How logs, errors and reprs name this worker: its name, or its number and script.
        self._label = repr(name) if name is not None else f"#{number} ({self._script.describe()})"
        thread_name = f"arkworker-{name if name is not None else number}"
        try:
            transport = WorkerThread(
                host_loop=self._loop,
                loop_factory=factory,
                thread_name=thread_name,
                os_name=name or thread_name,
                priority=priority,
                limit=max_inbox,
            )
        except Exception as exc:
            raise WorkerInitializationError(f"the worker's loop_factory failed: {exc!r}") from exc
        try:
            _limits.admit(transport, lambda: _ask_to_exit(transport), self._label)
        except WorkerInitializationError:
            transport.close()
            raise
        try:
            self._start(transport, name, clone, max_message_size)
        except BaseException as exc:  # no thread, or an interrupted start: nothing runs, nothing is tracked
            _limits.release(transport)
            transport.close()
            _hostloop.untrack(self._loop, self)
            parent = getattr(self, "_parent", None)
            if parent is not None:
                parent._children.pop(self, None)
            forget(self._script)
            if isinstance(exc, RuntimeError):
                raise WorkerInitializationError(f"cannot start worker {self._label}: {exc}") from exc
            raise

    def _start(self, transport: WorkerThread, name: str | None, clone: bool, max_message_size: int) -> None:
        """Host thread: the handle's state, then the worker's thread."""
        # At most 29 attributes in all (EventTarget's included): with 30, CPython 3.11 gave each handle a dict
        # of its own, 1.3 KiB more per worker, instead of one sharing its keys with the others.
        self._transport = transport
        self._inbox = transport.inbox
        self._outbox = transport.outbox
        self._clone = clone
        self._max_size = max_message_size
        self._small_kinds = SMALL_KINDS if max_message_size >= SMALL_SIZE else frozenset()
        self._state = _STARTING
        self._received = 0
        self._requests = 0
        self._errors = 0
        self._discarded = 0
        self._unhandled: BaseException | None = None  # the first worker error nobody handled
        self._in_context = False
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._request_ids = itertools.count(1)
        self._busy: asyncio.Task[None] | None = None  # an async callback holding the rest of the outbox
        self._buffer = MessageBuffer(self._outbox.mark_done)
        self._global_objects: dict[str, object] = {}
        self._exit_code: int | None = None
        self._exit_waiters: list[_ExitFuture] | None = []  # None once the exit is settled
        self._parent = current_port()
        if self._parent is not None:
            self._parent._children[self] = None
        _hostloop.track(self._loop, self)
        self._outbox.on_ready = self._pump
        self._outbox.on_urgent = self._on_urgent
        port = ThreadWorkerGlobalScope(transport, self._script, name, self._label, clone, max_message_size)
        transport.start(port._begin, port._loop_stopped, self._thread_ended)

    def __repr__(self) -> str:
        return f"<ThreadWorker {self._label} {self._state.name}>"

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("a ThreadWorker cannot be copied: it is its host's handle of a thread")

    # -- properties ---------------------------------------------------------------------------------

    @property
    def name(self) -> str | None:
        """The name given at construction."""
        return self._name

    @property
    def state(self) -> WorkerState:
        """Where the worker is in its life, as the host last saw it."""
        return self._state

    @property
    def exit_code(self) -> int | None:
        """0, or 1 once any worker error or worker-side message error happened; None until the worker has
        exited."""
        return self._exit_code

    def statistics(self) -> WorkerStatistics:
        """A snapshot of this worker's counters."""
        return WorkerStatistics(
            name=self._name,
            state=self._state,
            messages_sent=self._inbox.sent,
            messages_received=self._received,
            requests=self._requests,
            pending_requests=len(self._pending),
            inbox_depth=self._inbox.depth,
            host_inbox_depth=self._outbox.depth,
            errors=self._errors,
            discarded=self._discarded,
            exit_code=self._exit_code,
        )

    # -- sending ------------------------------------------------------------------------------------

    def post_message(
        self, data: SendT, transfer: list[Any] | tuple[Any, ...] = NO_TRANSFER
    ) -> Awaitable[None]:
        """Post ``data`` to the worker at once (never blocks).

        Await the result to wait while the worker's inbox holds more than ``max_inbox`` messages.
        ``data`` is copied (see ``clone``); buffers in ``transfer`` move without a copy.

        :raises WorkerNotRunningError: after ``terminate()``, or once the worker began to exit.
        :raises SerializationError: if ``data`` cannot be copied or is too large (after ``onmessageerror``).
        """
        kind = type(data)
        if (  # _payload()'s first test, inlined: this is every post's path
            kind in self._small_kinds
            and (kind is not int or INT_MIN < data < INT_MAX)  # type: ignore[operator]
            and transfer is NO_TRANSFER
            and self._state < _TERMINATING
        ):
            return self._inbox.send(data)
        return self._post(data, transfer, share=False)

    def post_message_with_shared_sendable(
        self, data: SendT, transfer: list[Any] | tuple[Any, ...] = NO_TRANSFER
    ) -> Awaitable[None]:
        """Like ``post_message``, but ``@sendable`` objects inside ``data`` are shared by reference."""
        return self._post(data, transfer, share=True)

    def _post(self, data: object, transfer: object, *, share: bool) -> Awaitable[None]:
        payload = self._payload(data, transfer, share)
        return self._inbox.send(payload)

    def _payload(self, data: object, transfer: object, share: bool) -> object:
        kind = type(data)
        if (
            kind in self._small_kinds
            and (kind is not int or INT_MIN < data < INT_MAX)  # type: ignore[operator]
            and transfer is NO_TRANSFER
            and self._state < _TERMINATING
        ):
            return data  # nothing to copy, surely below the size limit
        if self._state >= _TERMINATING:
            raise WorkerNotRunningError(
                f"worker {self._label} is {self._state.name.lower()}: it takes no more messages"
            )
        buffers = transfer_list(transfer)
        if not self._clone and not moves_a_view(buffers):
            return data
        try:
            return pack(data, buffers, share=share, max_size=self._max_size)
        except SerializationError as exc:
            self._message_error(exc)
            raise

    def request(self, data: SendT, *, timeout: float | None = None) -> Coroutine[Any, Any, Any]:
        """Send ``data`` as a request at once, and return a coroutine of what the worker's ``onmessage``
        returns for it. Called off the host loop's thread (to be run on that loop from another thread),
        the request is sent when the coroutine first runs, on the host loop.

        The handler's exception is raised by the coroutine with its original type and the worker's
        traceback. Cancelling it, its ``timeout`` (seconds) expiring, or dropping it unawaited cancels the
        handler in the worker; a handler that has not started never runs.

        :raises WorkerNotRunningError: after ``terminate()``, or if the worker exits before answering.
        :raises TimeoutError: if ``timeout`` expires.
        """
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # no running loop on this thread
            loop = None
        if loop is not self._loop:  # to be run on the host loop, from another thread: no task asks
            return self._request_later(data, timeout, None)
        # The task that asks, which may not be the one that awaits (asyncio.wait_for, gather, create_task).
        request_id, future = self._send_request(data, timeout, asyncio.current_task(loop))
        return _Answer(self, request_id, future, timeout)

    async def _request_later(
        self, data: SendT, timeout: float | None, asker: asyncio.Task[Any] | None
    ) -> Any:
        request_id, future = self._send_request(data, timeout, asker)
        return await self._answer_of(request_id, future, timeout)

    def _send_request(
        self, data: SendT, timeout: float | None, asker: asyncio.Task[Any] | None
    ) -> tuple[int, asyncio.Future[Any]]:
        if timeout is not None and (
            not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout >= 0  # NaN too
        ):
            raise ParameterError(f"timeout must be None or a number of seconds >= 0, not {timeout!r}")
        payload = self._payload(data, NO_TRANSFER, False)
        request_id = next(self._request_ids)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._pending[request_id] = future
        self._requests += 1
        # Woken as the answer is awaited: a worker woken before the host has gone back to its loop would
        # only wait for the GIL. Until then a post or terminate() wakes it, and FIFO order holds.
        self._inbox.put_quietly(proto.Request(request_id, payload, future))
        if self._busy is not None:
            self._let_go_if_waiting_on_itself(asker)
        return request_id, future

    async def _answer_of(self, request_id: int, future: asyncio.Future[Any], timeout: float | None) -> Any:
        self._inbox.wake()  # the request's, or nothing if the worker is woken already
        try:
            if timeout is None:
                return await future
            async with asyncio.timeout(timeout):
                return await future
        except BaseException:
            self._cancel_request(request_id)
            raise

    def _cancel_request(self, request_id: int) -> bool:
        """Nobody waits for the answer any more: the worker drops the request (its answer's future is done),
        or cancels its handler. False if it was answered already."""
        future = self._pending.pop(request_id, None)
        if future is None:
            return False
        future.cancel()  # no callback is registered unless someone awaits it, on the host loop
        self._inbox.put_urgent(proto.Cancel(request_id))
        return True

    def messages(self) -> MessageIterator[RecvT]:
        """``async for data in w.messages()``: each message no handler took, in order, until the exit."""
        return MessageIterator(self._buffer)

    # -- global call objects ------------------------------------------------------------------------

    def register_global_call_object(self, name: str, obj: object) -> None:
        """Let the worker call ``obj``'s methods synchronously under ``name`` (the same name replaces)."""
        if self._state >= _TERMINATING:
            raise WorkerNotRunningError(f"worker {self._label} is {self._state.name.lower()}")
        if not isinstance(name, str):
            raise ParameterError(f"the global call object's name must be a str, not {type(name).__name__}")
        self._global_objects[name] = obj

    def unregister_global_call_object(self, name: str | None = None) -> None:
        """Forget the object registered as ``name``, or every object when ``name`` is omitted."""
        self._check_usable()
        if name is None:
            self._global_objects.clear()
        elif not isinstance(name, str):
            raise ParameterError(f"the global call object's name must be a str, not {type(name).__name__}")
        else:
            self._global_objects.pop(name, None)

    def _on_urgent(self) -> None:
        for item in self._outbox.take_urgent():
            self._global_call(cast("proto.GlobalCall", item))

    def _global_call(self, call: proto.GlobalCall) -> None:
        if time.monotonic() > call.deadline:
            return  # the worker stopped waiting before we started
        obj = self._global_objects.get(call.instance)
        if obj is None and call.instance not in self._global_objects:
            call.reply.set(
                error=GlobalCallObjectNotRegisteredError(
                    f"no global call object is registered as {call.instance!r} on worker {self._label}"
                )
            )
            return
        try:
            method = getattr(obj, call.method, None)
        except Exception as exc:  # noqa: BLE001 - a property that raises: raised again in the worker
            call.reply.set(error=exc)
            return
        if (
            method is None
            or not callable(method)
            or inspect.iscoroutinefunction(method)
            or inspect.isgeneratorfunction(method)
            or inspect.isasyncgenfunction(method)
        ):
            call.reply.set(
                error=GlobalCallMethodNotCallableError(
                    f"{call.instance}.{call.method} is missing, not callable, async or a generator"
                )
            )
            return
        try:
            result = method(*unpack(call.args))
        except BaseException as exc:  # noqa: BLE001 - raised again in the worker
            call.reply.set(error=exc)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                self._report_callback_error(exc)  # it leaves the host loop too, as in asyncio
            return
        if inspect.isawaitable(result) or inspect.isgenerator(result) or inspect.isasyncgen(result):
            if inspect.iscoroutine(result):
                result.close()
            call.reply.set(
                error=GlobalCallMethodNotCallableError(
                    f"{call.instance}.{call.method} returned {type(result).__name__}: "
                    "only plain results can be sent"
                )
            )
            return
        try:
            call.reply.set(pack(result, (), share=False, max_size=self._max_size) if self._clone else result)
        except SerializationError as exc:
            call.reply.set(error=exc)

    # -- lifecycle ----------------------------------------------------------------------------------

    def terminate(self) -> asyncio.Future[int]:
        """Ask the worker to exit once it has handled every message posted before; never raises.

        Returns a future of the exit code that resolves after the thread has ended and ``onexit`` ran.
        Calling it again is harmless.
        """
        self._terminate()
        return self._exit_future(_calling_task())

    def _terminate(self) -> None:
        if self._state < _TERMINATING:
            self._state = _TERMINATING
            _ask_to_exit(self._transport)

    def wait(self) -> Coroutine[Any, Any, int]:
        """Wait until the worker has exited (thread ended, ``onexit`` ran) and return its exit code (a
        coroutine)."""
        return self._wait(_calling_task())

    async def _wait(self, asker: asyncio.Task[Any] | None) -> int:
        return await self._exit_future(asker)

    def _exit_future(self, asker: asyncio.Task[Any] | None) -> asyncio.Future[int]:
        # ``asker``: the task that asked for the exit, which may hand the waiting to another task.
        if self._exit_waiters is None:  # settled
            settled: asyncio.Future[int] = self._loop.create_future()
            settled.set_result(cast("int", self._exit_code))
            return settled
        future = _ExitFuture(self, asker)
        self._exit_waiters.append(future)
        return future

    async def __aenter__(self) -> Self:
        self._in_context = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            with _shielded_from_anyio():  # its cancel scopes cancel every await, this one too
                await self.terminate()
        except BaseException:
            self._leave_context(raising=False)
            raise
        self._leave_context(raising=exc_type is None)

    def _leave_context(self, *, raising: bool) -> None:
        # From here on an unhandled worker error goes to the loop's exception handler. One that came
        # while in the block is raised, or reported if the block raised or the wait was cancelled.
        self._in_context = False
        crash = self._unhandled
        if crash is None:
            return
        if raising:
            raise WorkerCrashedError(f"worker {self._label} crashed: {describe(crash)}") from crash
        self._report_unhandled(crash)

    def _check_usable(self) -> None:
        if self._state is _TERMINATED:
            raise WorkerNotRunningError(f"worker {self._label} has terminated")

    # -- handling what the worker sends -------------------------------------------------------------

    def _pump(self) -> None:
        outbox = self._outbox
        items, take = outbox.items, outbox.items.popleft
        handled = 0  # messages and replies handled in this run, marked done together at the end
        try:
            while self._busy is None:
                if not items and not outbox.rearm():
                    return
                item = take()
                kind = type(item)
                if kind not in proto.TO_HOST:
                    handled += self._on_message(item)
                elif type(item) is proto.Reply:
                    handled += 1
                    self._on_reply(item)
                elif type(item) is proto.ErrorReport:
                    self._on_error(item)
                else:
                    self._on_life_item(item)
        finally:
            if handled:
                outbox.mark_done(handled)

    def _on_life_item(self, item: object) -> None:
        """A ``Started``, ``Closing`` or ``Exited`` item: where the worker is in its life."""
        if type(item) is proto.Started:
            if self._state is _STARTING:
                self._state = _RUNNING
        elif type(item) is proto.Closing:
            self._state = max(self._state, _TERMINATING)
        elif type(item) is proto.Exited:
            self._on_exited(item)

    def _hold(self, awaitable: Awaitable[None]) -> asyncio.Task[None]:
        """An async callback runs: what the worker sent after its item waits until it is done."""
        task = self._loop.create_task(cast("Coroutine[Any, Any, None]", awaitable))
        self._busy = task
        task.add_done_callback(self._resume)
        return task

    def _resume(self, task: asyncio.Task[None]) -> None:
        if self._busy is task:  # it still holds the delivery
            self._busy = None
            self._pump()

    def _held_by(self, asker: asyncio.Task[Any] | None) -> bool:
        """True iff the async callback that holds the delivery is ``asker`` or the running task."""
        return self._busy is not None and (asker is self._busy or asyncio.current_task() is self._busy)

    def _let_go_if_waiting_on_itself(self, asker: asyncio.Task[Any] | None) -> None:
        # From request() and from a task starting to wait for the exit. If the async callback that holds
        # the delivery asked for it, or is that task, it waits for something queued behind itself (an
        # answer, the exit): the delivery goes on without it, a pass later, and it resumes in its turn.
        if self._held_by(asker):
            self._busy = None
            self._loop.call_soon(self._pump)

    def _on_message(self, payload: object) -> bool:
        """Dispatch one message; True iff it is done with (not waiting in the buffer)."""
        self._received += 1
        if type(payload) is Packed:
            try:
                data = unpack(payload)
            except SerializationError as exc:
                self._not_rebuilt(exc)
                return True
        else:
            data = payload
        handler = self._sole_message_callback
        if handler is not None:  # the common case: one callback, so no call_in_order
            event = _bare(MessageEvent)  # MessageEvent(data), without an __init__ call
            event.data = data
            try:
                result = handler(event)
            except self._callback_errors as exc:  # reported, never lost (an exit signal a pass later)
                self._report_callback_error(exc)
                return True
            if result is not None and type(result) not in PLAIN_RESULTS and pending(result):
                self._hold(
                    await_in_order(result, (), None, self._report_callback_error, self._callback_errors)
                )
            return True
        callbacks = self._callbacks("message")
        if not callbacks:
            self._buffer.push(data)  # marked done when a messages() reader takes it
            return False
        result = call_in_order(
            callbacks, MessageEvent(data), self._report_callback_error, catch=self._callback_errors
        )
        if result is not None:
            self._hold(result)
        return True

    def _on_reply(self, reply: proto.Reply) -> None:
        self._received += 1
        future = self._pending.pop(reply.id, None)
        if future is None or future.done():
            return  # the requester stopped waiting
        if reply.error is not None:
            future.set_exception(_settable(reply.error))
        elif type(reply.payload) is not Packed:
            future.set_result(reply.payload)
        else:
            try:
                future.set_result(unpack(reply.payload))
            except SerializationError as exc:
                future.set_exception(exc)

    def _on_error(self, report: proto.ErrorReport) -> None:
        self._errors += 1
        if report.kind == "messageerror":
            return
        if report.kind == "not rebuilt":  # and no onmessageerror in the worker took it
            self._loop.call_exception_handler(
                {
                    "message": f"a message to worker {self._label} cannot be rebuilt there",
                    "exception": report.event.error,
                    "worker": self,
                }
            )
            return
        event = report.event
        if self.onallerrors is not None:
            result = call_in_order(
                [self.onallerrors], event, self._report_callback_error, catch=self._callback_errors
            )
        else:
            callbacks = self._callbacks("error")
            if not callbacks:
                self._unhandled_error(cast("BaseException", event.error))
            result = call_in_order(callbacks, event, self._report_callback_error, catch=self._callback_errors)
            self._terminate()
        if result is not None:
            self._hold(result)

    def _unhandled_error(self, exc: BaseException) -> None:
        if self._unhandled is None:
            self._unhandled = exc
            if self._in_context:  # raised as the block is left, or reported then if the block raised
                return
        self._report_unhandled(exc)

    def _report_unhandled(self, exc: BaseException) -> None:
        self._loop.call_exception_handler(
            {"message": f"unhandled error in worker {self._label}", "exception": exc, "worker": self}
        )

    def _message_error(self, exc: SerializationError) -> None:
        self._call_message_error(self._callbacks("messageerror"), exc)

    def _call_message_error(self, callbacks: tuple[Callback, ...], exc: SerializationError) -> None:
        event = error_event(exc, "messageerror")
        result = call_in_order(callbacks, event, self._report_callback_error, catch=self._callback_errors)
        if result is not None:
            schedule(self._loop, result)

    def _not_rebuilt(self, exc: SerializationError) -> None:
        """A message from the worker cannot be rebuilt here: it goes to ``onmessageerror``, or, without one,
        to the host loop's exception handler, so that it is never dropped silently."""
        callbacks = self._callbacks("messageerror")  # taken once: it uses up the once() listeners
        if callbacks:
            self._call_message_error(callbacks, exc)
        else:
            self._loop.call_exception_handler(
                {
                    "message": f"a message from worker {self._label} cannot be rebuilt",
                    "exception": exc,
                    "worker": self,
                }
            )

    def _report_callback_error(self, exc: BaseException) -> None:
        """A host callback raised ``exc``: it goes to the host loop's exception handler, as asyncio does with
        a callback's. ``KeyboardInterrupt`` and ``SystemExit`` leave the loop, as in asyncio: raised again
        by a task that holds the delivery, so that nothing more is dispatched, but the item in hand still
        finishes its bookkeeping. Run again, the loop delivers the rest."""
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            # From a global call, an async callback may hold the delivery already: it keeps the hold.
            raising = (
                self._loop.create_task(_raise(exc)) if self._busy is not None else self._hold(_raise(exc))
            )
            raising.add_done_callback(asyncio.Task.exception)  # it left the loop: seen
            return
        self._loop.call_exception_handler(
            {"message": f"exception in a callback of worker {self._label}", "exception": exc, "worker": self}
        )

    def _thread_ended(self, crash: BaseException | None) -> None:
        # Worker thread, its very last call: the exit takes its place in the FIFO.
        self._outbox.put(proto.Exited(crash), counted=False)
        if self._outbox.receiver_closed():  # no host will take the exit: the slot is free now
            _limits.release(self._transport)

    def _on_exited(self, exited: proto.Exited) -> None:
        self._transport.join()  # sending Exited was the thread's last act: this returns at once
        _limits.release(self._transport)  # first: interpreter exit then no longer wakes the worker
        self._transport.close()
        self._state = _TERMINATED
        if exited.crash is not None:
            self._errors += 1
            self._unhandled_error(exited.crash)
        forget(self._script)
        self._discarded = self._inbox.depth
        if self._discarded:  # a warning if the worker failed; else its close() chose to (ArkTS)
            logger.log(
                logging.WARNING if self._errors else logging.INFO,
                "worker %s exited with %d inbound messages unhandled",
                self._label,
                self._discarded,
                extra={"worker": self._label},
            )
        for future in list(self._pending.values()):  # an unawaited request may be freed meanwhile
            if not future.done():
                future.set_exception(WorkerNotRunningError(f"worker {self._label} exited before answering"))
        self._pending.clear()
        self._inbox.fail_space_waiters(
            lambda: WorkerNotRunningError(f"worker {self._label} exited before its inbox drained")
        )
        self._buffer.close()
        if self._parent is not None:
            self._parent._children.pop(self, None)
        _hostloop.untrack(self._loop, self)
        self._exit_code = 1 if self._errors else 0  # sticky: any worker error or message error
        callbacks = ((self.onexit,) if self.onexit is not None else ()) + self._callbacks("exit")
        result = call_in_order(
            callbacks, self._exit_code, self._report_callback_error, catch=self._callback_errors
        )
        if result is None:
            self._settle_exit()
        else:  # held even if an async error callback of the crash holds the delivery: nothing is behind it
            self._hold(self._settle_after(result))

    async def _settle_after(self, awaitable: Awaitable[None]) -> None:
        try:
            await awaitable
        finally:  # however the exit callbacks end, the exit is settled
            self._settle_exit()

    def _settle_exit(self) -> None:
        waiters, self._exit_waiters = self._exit_waiters or [], None
        for future in waiters:
            future.worker = future.asker = None
            if not future.done():
                future.set_result(cast("int", self._exit_code))


def _check_options(
    name: object, priority: object, max_inbox: object, clone: object, max_message_size: object
) -> ThreadWorkerPriority | None:
    if name is not None and not isinstance(name, str):
        raise WorkerOptionError(f"name must be a str, not {type(name).__name__}")
    if not isinstance(max_inbox, int) or isinstance(max_inbox, bool) or max_inbox < 1:
        raise WorkerOptionError(f"max_inbox must be an int of at least 1, not {max_inbox!r}")
    if not isinstance(clone, bool):
        raise WorkerOptionError(f"clone must be a bool, not {type(clone).__name__}")
    if not isinstance(max_message_size, int) or isinstance(max_message_size, bool) or max_message_size < 1:
        raise WorkerOptionError(f"max_message_size must be an int of at least 1, not {max_message_size!r}")
    if priority is None or isinstance(priority, ThreadWorkerPriority):
        return priority
    raise WorkerOptionError(f"priority must be a ThreadWorkerPriority, not {priority!r}")


class _ExitFuture(asyncio.Future[int]):
    """The exit code of ``worker``, to come. A host callback of that worker that holds its delivery and
    asked for it (``asker``), or starts waiting for it, stops holding the delivery once anything waits for
    it (awaited, directly or through ``wait_for``, ``gather`` or a task): the exit is queued behind the
    callback. Merely calling ``terminate()`` does not. An exit callback that waits for it gets the code at
    once: the exit settles only after the exit callbacks."""

    def __init__(self, worker: ThreadWorker, asker: asyncio.Task[Any] | None) -> None:
        super().__init__(loop=worker._loop)
        self.worker: ThreadWorker | None = worker  # None once settled
        self.asker = asker

    def add_done_callback(self, fn: Callable[[Self], object], *, context: Any = None) -> None:
        # Called by whatever starts waiting for this future, in that waiter's task.
        worker = self.worker
        if worker is not None and not self.done():  # a cancelled one (a timeout's) stays cancelled
            if worker._state is _TERMINATED and worker._held_by(self.asker):
                # An exit callback waits for the exit, which settles once it is done: it gets the code now.
                self.worker = self.asker = None
                self.set_result(cast("int", worker._exit_code))
            else:
                worker._let_go_if_waiting_on_itself(self.asker)
        super().add_done_callback(fn, context=context)


class _Answer(collections.abc.Coroutine[Any, Any, Any]):
    """What ``request()`` returns on the host loop: a coroutine of the answer to a request sent already.

    It waits in ``ThreadWorker._answer_of``, made as it first runs. Cancelled or closed before that, or
    dropped unawaited, it cancels the request, as the cancellation of a waiting task does.
    """

    __slots__ = ("_future", "_id", "_timeout", "_waiting", "_worker")

    def __init__(
        self,
        worker: ThreadWorker[Any, Any],
        request_id: int,
        future: asyncio.Future[Any],
        timeout: float | None,
    ) -> None:
        self._worker = worker
        self._id = request_id
        self._future = future
        self._timeout = timeout
        self._waiting: Coroutine[Any, Any, Any] | None = None

    def _wait(self) -> Coroutine[Any, Any, Any]:
        if self._waiting is None:
            self._waiting = self._worker._answer_of(self._id, self._future, self._timeout)
        return self._waiting

    def __await__(self) -> Generator[Any, None, Any]:
        waiting = self._waiting
        if waiting is None:  # _wait(), inlined: this is every request's path
            waiting = self._waiting = self._worker._answer_of(self._id, self._future, self._timeout)
        elif waiting.cr_await is not None:  # type: ignore[attr-defined]
            raise RuntimeError("coroutine is being awaited already")  # as a native coroutine says
        return waiting.__await__()

    def send(self, value: Any) -> Any:
        return self._wait().send(value)

    def throw(self, *exc_info: Any) -> Any:
        if self._waiting is None:  # a task cancelled before its first step
            self._worker._cancel_request(self._id)
        return self._wait().throw(*exc_info)

    def close(self) -> None:
        if self._waiting is None:
            self._worker._cancel_request(self._id)
        self._wait().close()

    def __del__(self) -> None:
        if self._waiting is None:  # never awaited: nobody will take the answer
            cancelled = self._worker._cancel_request(self._id)
            # One text for every request, as Python's own for a coroutine never awaited: the warnings
            # registry keeps each text it has shown once, for good.
            text = "ThreadWorker.request() was never awaited"
            warnings.warn(
                (text + ": its request is cancelled") if cancelled else text,
                RuntimeWarning,
                source=self,
                stacklevel=2,
            )


def _calling_task() -> asyncio.Task[Any] | None:
    """The task running on this thread's loop, if any: the one that calls (None from a plain thread)."""
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop on this thread
        return None


def _ask_to_exit(transport: WorkerThread) -> None:
    """Any thread: put the terminate item in the worker's FIFO."""
    transport.inbox.put(proto.TERMINATE, counted=False)
    # A handler awaiting its post_message must not wait for a reader of messages() that may never come:
    # the worker has to get to the terminate item.
    transport.outbox.lift_limit()


def _shielded_from_anyio() -> contextlib.AbstractContextManager[object]:
    """A shield from anyio's cancel scopes, if anyio is in use (else none can be active)."""
    anyio = sys.modules.get("anyio")
    return contextlib.nullcontext() if anyio is None else anyio.CancelScope(shield=True)


async def _raise(exc: BaseException) -> None:
    raise exc


def _settable(error: BaseException) -> BaseException:
    """``error``, or a ``RuntimeError`` caused by it if it is a ``StopIteration``, which no future can hold
    (asyncio turns one raised by a coroutine into a ``RuntimeError`` the same way)."""
    if not isinstance(error, StopIteration):
        return error
    wrapped = RuntimeError(f"the request's handler raised {describe(error)}")
    wrapped.__cause__ = error
    return wrapped


def _resolve_loop_factory(option: object) -> LoopFactory:
    if option is None:
        return new_worker_loop
    if option == "uvloop":
        try:
            import uvloop  # noqa: PLC0415 - optional, imported only when asked for
        except ImportError:
            raise WorkerInitializationError(
                "loop_factory='uvloop' needs uvloop, which is not installed (pip install uvloop)"
            ) from None
        return cast("LoopFactory", uvloop.new_event_loop)
    if callable(option):
        return cast("LoopFactory", option)
    raise WorkerOptionError(f"loop_factory must be a callable or 'uvloop', not {option!r}")
