"""The worker's side: ``worker_port`` and the coroutine that is a worker's life.

Everything here runs on the worker's own event loop thread.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, cast

from . import _protocol as proto
from ._buffer import MessageBuffer, MessageIterator
from ._clone import NO_TRANSFER, Packed, moves_a_view, pack, transfer_list, unpack
from ._errors import (
    GlobalCallTimeoutError,
    NotInWorkerError,
    ParameterError,
    SerializationError,
    WorkerError,
    WorkerNotRunningError,
    describe,
)
from ._events import (
    CALLBACK_ERRORS,
    PLAIN_RESULTS,
    Callback,
    ErrorEvent,
    EventTarget,
    MessageEvent,
    WorkerState,
    await_in_order,
    call_in_order,
    pending,
)
from ._script import Script, run_top_level, user_location
from ._transport import BlockingReply, WorkerThread

if TYPE_CHECKING:
    from ._worker import ThreadWorker


_STARTING, _RUNNING, _TERMINATING = WorkerState.STARTING, WorkerState.RUNNING, WorkerState.TERMINATING
_NOT_PLAIN: frozenset[type] = frozenset({proto.Request, proto.Terminate, Packed})
"""Inbox items that are not a message passed as it is."""
_bare = object.__new__


# The port of each worker thread, by thread id (a thread-local would cost each worker a dict).
_ports: dict[int, ThreadWorkerGlobalScope] = {}


def current_port() -> ThreadWorkerGlobalScope | None:
    """The port of the worker running on this thread, or None on any other thread."""
    return _ports.get(threading.get_ident())


def error_event(exc: BaseException, type: str = "error") -> ErrorEvent:  # noqa: A002
    """The ``ErrorEvent`` for ``exc``, pointing at the user code that raised it."""
    filename, lineno, colno = user_location(exc)
    return ErrorEvent(describe(exc), filename, lineno, colno, exc, type)


class ThreadWorkerGlobalScope(EventTarget):
    """The worker's side of a worker: what ``worker_port`` is inside a worker thread.

    Every method runs on the worker's loop thread. A worker script:

    ```python
    from arkworker import worker_port

    def on_message(event):
        worker_port.post_message(event.data * 2)

    worker_port.onmessage = on_message
    ```
    """

    def __init__(
        self,
        transport: WorkerThread,
        script: Script,
        name: str | None,
        label: str,
        clone: bool,
        max_size: int,
    ) -> None:
        super().__init__()
        self._name = name
        self._label = label  # how logs and messages name this worker
        self._transport = transport
        self._loop = transport.loop
        self._inbox = transport.inbox
        self._outbox = transport.outbox
        self._script = script
        self._clone = clone
        self._max_size = max_size
        self._state = _STARTING
        self._thread = -1  # the worker thread's ident, once it runs
        # Posts made while the top level runs; sent right after STARTED, so the host is RUNNING first.
        self._held: list[object] | None = []
        # The handler task being awaited; while set, the rest of the inbox waits.
        self._busy: asyncio.Future[Any] | None = None
        self._finishing = False  # True once terminate() or close() began the exit
        self._buffer = MessageBuffer(self._inbox.mark_done)
        self._requests: dict[int, asyncio.Task[Any]] = {}
        # Sets, kept as dicts with None values: an empty dict is a third of an empty set's size.
        self._internal: dict[asyncio.Task[None], None] = {}  # error reports still being delivered
        self._tasks: dict[asyncio.Task[Any], None] = {}  # every unfinished task of this worker's loop
        self._children: dict[ThreadWorker, None] = {}
        self._life: asyncio.Task[Any] | None = None  # the task of the coroutine the script returned
        # The task factory the loop_factory set (asyncio.eager_task_factory, say): the worker's makes its
        # tasks with it.
        self._task_factory: Callable[..., Any] | None = None

    @property
    def name(self) -> str | None:
        """The worker's name, as given to ``ThreadWorker(name=...)``."""
        self._check_thread()
        return self._name

    @property
    def self(self) -> ThreadWorkerGlobalScope:
        """This port itself (ArkTS ``self``); faster to keep than the ``worker_port`` proxy."""
        self._check_thread()
        return self

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("a worker's port cannot be copied: it belongs to its worker's thread")

    # -- sending ----------------------------------------------------------------------------------

    def post_message(
        self, data: object, transfer: list[Any] | tuple[Any, ...] = NO_TRANSFER
    ) -> Awaitable[None]:
        """Post ``data`` to the host at once; await the result to wait while the host's inbox is full."""
        return self._post(data, transfer, share=False)

    def post_message_with_shared_sendable(
        self, data: object, transfer: list[Any] | tuple[Any, ...] = NO_TRANSFER
    ) -> Awaitable[None]:
        """Like ``post_message``, but ``@sendable`` objects inside ``data`` are shared by reference."""
        return self._post(data, transfer, share=True)

    def _post(self, data: object, transfer: object, *, share: bool) -> Awaitable[None]:
        self._check_thread()
        buffers = transfer_list(transfer)
        if self._clone or moves_a_view(buffers):
            try:
                payload = pack(data, buffers, share=share, max_size=self._max_size)
            except SerializationError as exc:
                self._message_error(exc)
                raise
        else:
            payload = data
        if self._held is not None:
            self._held.append(payload)
        else:
            self._outbox.put(payload)
            if self._outbox.receiver_closed():
                raise WorkerNotRunningError(
                    "the host's event loop has closed: the message cannot be delivered"
                )
        return self._outbox.wait_for_space()

    def _check_usable(self) -> None:
        self._check_thread()

    def _check_thread(self) -> None:
        """Raise ``NotInWorkerError`` unless called on this worker's thread, while the worker runs."""
        if threading.get_ident() != self._thread:
            raise NotInWorkerError(
                f"a worker's port is only usable on that worker's thread, not on thread "
                f"{threading.current_thread().name!r}: from another thread, schedule the call on the "
                f"worker's loop, thread-safely"
            )

    def messages(self) -> MessageIterator[Any]:
        """``async for data in worker_port.messages()``: messages no handler took, until the worker exits."""
        self._check_thread()
        return MessageIterator(self._buffer)

    def close(self) -> None:
        """Stop after the current handler; inbound messages still queued are discarded and counted."""
        self._check_thread()
        if self._state >= _TERMINATING:
            return
        self._state = _TERMINATING
        if self._held is None:  # while the top level runs, _begin() sends CLOSING after what it posted
            self._outbox.put(proto.CLOSING, counted=False)
        self._outbox.lift_limit()  # the current handler finishes without waiting for the host's reader
        self._finish()

    def call_global_call_object_method(
        self, instance_name: str, method_name: str, timeout_ms: int, *args: object
    ) -> Any:
        """Block this thread while the host runs ``instance.method(*args)``; return a copy of the result.

        ``timeout_ms`` is 1-5000 milliseconds; 0 or out of range means 5000. The host method's exception
        is raised here.
        """
        self._check_thread()  # from the host's thread, it would block the loop that must answer it
        if not isinstance(instance_name, str) or not isinstance(method_name, str):
            raise ParameterError("instance_name and method_name must be str")
        if not isinstance(timeout_ms, (int, float)) or isinstance(timeout_ms, bool):
            raise ParameterError(
                f"timeout_ms must be a number of milliseconds, not {type(timeout_ms).__name__}"
            )
        if not 1 <= timeout_ms <= 5000:
            timeout_ms = 5000
        packed_args = pack(args, (), share=False, max_size=self._max_size) if self._clone else args
        reply = BlockingReply()
        timeout = timeout_ms / 1000
        call = proto.GlobalCall(instance_name, method_name, packed_args, reply, time.monotonic() + timeout)
        if not self._outbox.put_urgent(call):
            raise WorkerNotRunningError("the host's event loop has closed: no global call can be made")
        try:
            result = reply.wait(timeout)
        except TimeoutError:
            raise GlobalCallTimeoutError(
                f"the host did not answer {instance_name}.{method_name}() within {timeout_ms:g} ms"
            ) from None
        return unpack(result)

    # -- the error path ---------------------------------------------------------------------------

    def _report_callback_error(self, exc: BaseException) -> None:
        self._handler_error(exc)

    def _handler_error(self, exc: BaseException) -> None:
        """An uncaught exception in worker code: worker ``onerror`` first, then the host hears of it."""
        event = error_event(exc)
        # What onerror itself raises is not sent down the worker's error path again, which could loop for
        # ever: only the host hears of it, right after the error that onerror was handling.
        failed: list[BaseException] = []
        result = call_in_order(self._callbacks("error"), event, failed.append)
        if result is None:
            self._send_reports(event, failed)
        else:
            self._spawn(self._report_after(result, event, failed))

    async def _report_after(
        self, awaitable: Awaitable[None], event: ErrorEvent, failed: list[BaseException]
    ) -> None:
        try:
            await awaitable
        finally:  # the host hears of the error however onerror ends, an exit's cancellation included
            self._send_reports(event, failed)

    def _send_reports(self, event: ErrorEvent, failed: list[BaseException]) -> None:
        self._send_report(proto.ErrorReport(event, "error"))
        for exc in failed:
            self._send_report(proto.ErrorReport(error_event(exc), "error"))

    def _send_report(self, report: proto.ErrorReport) -> None:
        # In order with the posts: while the top level runs, they are held (the host sees RUNNING first).
        if self._held is not None:
            self._held.append(report)
        else:
            self._outbox.put(report, counted=False)

    def _message_error(self, exc: SerializationError) -> None:
        """A message could not be copied or rebuilt here: ``onmessageerror``, and the exit code becomes 1."""
        self._call_message_error(self._callbacks("messageerror"), exc)

    def _call_message_error(self, callbacks: tuple[Callback, ...], exc: SerializationError) -> None:
        event = error_event(exc, "messageerror")
        self._send_report(proto.ErrorReport(event, "messageerror"))
        result = call_in_order(callbacks, event, self._handler_error)
        if result is not None:
            self._spawn(result)

    def _not_rebuilt(self, exc: SerializationError) -> None:
        """A message from the host cannot be rebuilt here: ``onmessageerror``, or, without one, the host
        reports it to its loop's exception handler, so that it is never dropped silently."""
        callbacks = self._callbacks("messageerror")  # taken once: it uses up the once() listeners
        if callbacks:
            self._call_message_error(callbacks, exc)
        else:
            self._send_report(proto.ErrorReport(error_event(exc, "messageerror"), "not rebuilt"))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._internal[task] = None
        task.add_done_callback(self._internal.pop)

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # Exceptions asyncio could not hand to anyone (a failed background task, a callback) are worker
        # errors, as ArkTS sends timer exceptions to onAllErrors.
        exc = context.get("exception")
        if isinstance(exc, Exception):
            try:
                self._handler_error(exc)
            except (SystemExit, KeyboardInterrupt):
                raise  # asyncio lets these out of the loop: the thread's crash
            except BaseException as abort:  # noqa: BLE001 - the worker's onerror raised one: the crash
                self._die(abort)
        elif exc is not None and not isinstance(exc, asyncio.CancelledError):
            self._die(exc)  # neither an error nor a cancellation escaped a callback: an abort, say
        else:
            loop.default_exception_handler(context)

    def _die(self, exc: BaseException) -> None:
        """``exc`` is no error a handler can take (``SystemExit``, a test runner's abort): the worker ends,
        and ``exc`` is its thread's crash."""
        self._transport.crash(exc)
        self.close()

    # -- handling the inbox -------------------------------------------------------------------------

    def _pump(self) -> None:
        # Only this pump's own calls set _busy (a handler's task that holds the inbox, which pumps
        # again when done), so it is tested here and after them, not before every message.
        if self._busy is not None or (self._internal and self._hold_for_reports()):
            return
        inbox = self._inbox
        items, take = inbox.items, inbox.items.popleft
        handled = 0  # messages handled to completion in this run, marked done together at the end
        answered = False  # a request was answered quietly: wake the host before anything else
        try:
            while self._state is _RUNNING:
                if not items and not inbox.rearm():
                    return
                item = take()
                if answered:
                    answered = False
                    self._outbox.wake()
                handler = self._sole_message_callback
                if handler is None or type(item) in _NOT_PLAIN:
                    if type(item) is proto.Request:
                        handled += self._on_request(item)
                        answered = True
                    else:
                        handled += self._dispatch(item)
                    if self._busy is not None or (self._internal and self._hold_for_reports()):
                        return
                    continue
                # The hot path: a message passed as it is, to the one message callback.
                event = _bare(MessageEvent)  # MessageEvent(item), without an __init__ call
                event.data = item
                try:
                    result = handler(event)
                except CALLBACK_ERRORS as exc:  # the worker's error path
                    self._handler_error(exc)
                    if self._internal and self._hold_for_reports():
                        handled += 1
                        return
                    result = None
                if result is None or type(result) in PLAIN_RESULTS or not pending(result):
                    handled += 1
                else:
                    self._await_handlers(await_in_order(result, (), None, self._handler_error))
                    return
        finally:
            if handled:
                inbox.mark_done(handled)
            if answered:
                self._outbox.wake()

    def _dispatch(self, item: object) -> bool:
        """Handle an item other than a request off the hot path; True iff it is done with right now."""
        if type(item) is proto.Terminate:
            self._state = _TERMINATING
            self._finish(discard=False)  # messages() readers still get what is buffered
            return False
        if type(item) is Packed:
            try:
                data = unpack(item)
            except SerializationError as exc:
                self._not_rebuilt(exc)
                return True
        else:
            data = item
        callbacks = self._callbacks("message")
        if not callbacks:
            self._buffer.push(data)  # marked done when a messages() reader takes it
            return False
        rest = call_in_order(callbacks, MessageEvent(data), self._handler_error)
        if rest is None:
            return True
        self._await_handlers(rest)
        return False

    def _hold_for_reports(self) -> bool:
        """While the worker runs, an error still being reported (its async ``onerror`` or
        ``onmessageerror`` runs) holds the inbox, as an async handler does, until every report is sent.
        True iff it does."""
        if self._state is not _RUNNING:
            return False
        self._hold(self._loop.create_task(self._reports_sent()), self._reported)
        return True

    def _reported(self, task: asyncio.Future[Any]) -> None:
        self._busy = None
        self._pump()

    def _await_handlers(self, rest: Coroutine[Any, Any, None]) -> None:
        """A message's handlers are still running (``rest``): the inbox waits until they are done."""
        self._hold(self._loop.create_task(rest), self._resume)

    def _hold(self, task: asyncio.Task[Any], on_done: Any) -> None:
        self._busy = task
        task.add_done_callback(on_done)

    def _resume(self, task: asyncio.Future[Any]) -> None:
        # An error of the task was reported or answered already. What is not an error (an abort, an exit
        # signal, which has left the loop already, as asyncio lets it) is the worker's crash.
        crash = None if task.cancelled() else task.exception()
        if crash is not None and not isinstance(crash, Exception):
            self._die(crash)
        self._busy = None
        self._inbox.mark_done()
        self._pump()

    def _on_request(self, request: proto.Request) -> bool:
        """Start one request; True iff it was answered (quietly: the pump wakes the host) or dropped."""
        if request.answer.done():  # nobody waits for the answer: its handler never runs
            return True
        handler = self._onmessage
        if handler is None:
            error = WorkerError("the worker has no onmessage handler, so it cannot answer a request")
            self._answer(request.id, None, error, quietly=True)
            return True
        event = _bare(MessageEvent)  # MessageEvent(data), without an __init__ call
        try:
            event.data = unpack(request.payload) if type(request.payload) is Packed else request.payload
            result = handler(event)
        except asyncio.CancelledError:  # as if its task had been cancelled in the worker
            self._answer(request.id, None, _cancelled_in_worker(), quietly=True)
            return True
        except Exception as exc:  # noqa: BLE001 - goes back to the requester
            self._answer(request.id, None, exc, quietly=True)
            return True
        if type(result) not in PLAIN_RESULTS and inspect.isawaitable(result):
            task = asyncio.ensure_future(result, loop=self._loop)
            self._requests[request.id] = task
            self._hold(task, functools.partial(self._request_done, request.id))
            return False
        self._answer(request.id, result, None, quietly=True)
        return True

    def _request_done(self, request_id: int, task: asyncio.Future[Any]) -> None:
        self._requests.pop(request_id, None)
        if task.cancelled():
            # The host stopped waiting (then this answer is dropped) or the worker is exiting.
            self._answer(request_id, None, _cancelled_in_worker())
        else:
            exc = task.exception()
            if exc is None or isinstance(exc, Exception):
                self._answer(request_id, None if exc else task.result(), exc)
            else:  # not an error (a test runner's abort, say): the worker's crash, as from a sync handler
                self._die(exc)
        self._resume(task)

    def _answer(
        self, request_id: int, value: object, error: BaseException | None, *, quietly: bool = False
    ) -> None:
        payload = value
        if error is None and self._clone:
            try:
                payload = pack(value, (), share=False, max_size=self._max_size)
            except SerializationError as exc:
                payload, error = None, exc
        if quietly:
            self._outbox.put_quietly(proto.Reply(request_id, payload, error))
        else:
            self._outbox.put(proto.Reply(request_id, payload, error))

    def _on_urgent(self) -> None:
        for item in self._inbox.take_urgent():
            request_id = cast("proto.Cancel", item).id
            task = self._requests.get(request_id)
            if task is not None:  # else it is answered, or will be dropped when taken (its answer is done)
                task.cancel()

    # -- life and exit ------------------------------------------------------------------------------

    def _finish(self, *, discard: bool = True) -> None:
        self._buffer.close(discard=discard)
        if self._finishing:
            return
        self._finishing = True
        if self._settled():
            self._loop.call_soon(self._end_if_settled)  # a pass later: what is scheduled by now runs first
        else:
            self._loop.create_task(self._clean_up())

    def _end_if_settled(self) -> None:
        if self._settled():
            self._end()
        else:  # the callbacks of the last pass left something to wait for
            self._loop.create_task(self._clean_up())

    def _settled(self) -> bool:
        """Nothing to wait for at the exit: no handler running, no reader holding a message, no child,
        no unfinished task, and nothing for the loop's own shutdown to do."""
        return (
            self._busy is None
            and self._buffer.settled()
            and not self._children
            and not self._internal
            and (not self._tasks or all(task.done() for task in self._tasks))
            and self._transport.loop_is_clean()
        )

    async def _clean_up(self) -> None:
        """The wind-down that must wait: for the current handler and readers, then for the clean-up."""
        try:
            try:
                if self._busy is not None:
                    await asyncio.wait([self._busy])  # the current handler finishes
                if len(self._buffer):
                    await asyncio.sleep(0)  # a reader task created just before the exit gets to start
                await self._buffer.readers_done()  # every messages() reader finishes what it took
                await self._shut_down()
            finally:  # even if a task cancelled this one: what asyncio.run() does at the end
                await self._loop.shutdown_asyncgens()
                if self._transport.executor_used():  # else nothing to wait for (uvloop would start a thread)
                    await self._loop.shutdown_default_executor()
                await self._reports_sent()  # of errors raised as the async generators closed
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - what the worker died of: its thread's crash
            self._transport.crash(exc)
        finally:
            self._end()

    def _end(self) -> None:
        # A pass later, as run_until_complete() does: what the last step scheduled still runs.
        self._loop.call_soon(self._stop)

    def _stop(self) -> None:
        _ports.pop(self._thread, None)
        self._thread = -1  # no thread may use this port any more (another may get its ident)
        self._forget_callbacks()
        self._transport.end()

    def _loop_stopped(self, escaped: BaseException | None) -> None:
        """Worker thread: ``escaped`` (an exit signal) stopped the loop, or the worker's code did; the loop
        runs on, and the worker winds down as after ``close()``."""
        if escaped is not None:  # the task it escaped from holds it too: it is reported once, as the crash
            for task in self._tasks:
                if getattr(task, "_exception", None) is escaped:
                    task.exception()  # retrieved, so asyncio does not log it as never retrieved
        self.close()

    def _life_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._handler_error(cast("BaseException", task.exception()))
        self.close()

    def _begin(self) -> None:
        """The worker's first callback: run the top level, then take messages until ``_finish()``."""
        self._thread = threading.get_ident()
        _ports[self._thread] = self
        self._loop.set_exception_handler(self._loop_exception)
        self._task_factory = self._loop.get_task_factory()
        self._loop.set_task_factory(self._new_task)
        ran, life = False, None
        try:
            life = run_top_level(self._script, self)
            ran = True
        except CALLBACK_ERRORS as exc:  # the error path of a failed start
            self._handler_error(exc)
            self.close()
        except BaseException as exc:  # noqa: BLE001 - reported as the thread's crash
            self._die(exc)
        held, self._held = self._held or [], None
        # The host sees RUNNING before what the top level posted, unless it failed (what it and its
        # onerror posted is still delivered), and it sees a close() made there after those posts.
        if ran:
            self._outbox.put(proto.STARTED, counted=False)
        for payload in held:
            self._outbox.put(payload, counted=type(payload) is not proto.ErrorReport)
        if self._state is not _STARTING:
            self._outbox.put(proto.CLOSING, counted=False)
            if inspect.iscoroutine(life):
                life.close()  # it closed itself at top level: its life never starts
            return
        self._state = _RUNNING
        self._inbox.on_ready = self._pump
        self._inbox.on_urgent = self._on_urgent
        if inspect.iscoroutine(life):
            self._life = self._loop.create_task(life)
            self._life.add_done_callback(self._life_done)
        self._on_urgent()
        # The inbox's first drain: nothing the host put in its FIFO before it woke this loop. Tasks that the
        # top level started (a coroutine life among them) take their first step before it, as they may set
        # the handlers.
        if self._tasks:
            self._loop.call_soon(self._pump)
        else:
            self._pump()

    async def _shut_down(self) -> None:
        children = list(self._children)
        for child in children:
            child.terminate()
        for child in children:
            await child.wait()
        await self._reports_sent()
        current = asyncio.current_task()
        others = [task for task in self._tasks if task is not current and not task.done()]
        for task in others:
            task.cancel()
        outcomes = await asyncio.gather(*others, return_exceptions=True)
        for task, outcome in zip(others, outcomes, strict=True):
            if isinstance(outcome, Exception) and task is not self._life:  # the life reports its own
                self._handler_error(outcome)
        await self._reports_sent()  # of those errors

    async def _reports_sent(self) -> None:
        """Wait until every error report is on its way (an async ``onerror`` may still run)."""
        while self._internal:
            await asyncio.wait(list(self._internal))

    def _new_task(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        /,
        **options: Any,
    ) -> asyncio.Task[Any]:
        # The worker loop's task factory: the worker knows its own tasks without asyncio.all_tasks(),
        # which scans every task of every thread.
        factory = self._task_factory
        task = asyncio.Task(coro, loop=loop, **options) if factory is None else factory(loop, coro, **options)
        self._tasks[task] = None
        task.add_done_callback(self._tasks.pop)
        return task


def _cancelled_in_worker() -> WorkerError:
    return WorkerError("the request's handler was cancelled in the worker")


class _WorkerPortProxy:
    """``arkworker.worker_port`` where it may be used by more than one thread (a module imported on the
    host, or shared by workers): the current worker's port, looked up on each use."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        return getattr(_port_or_raise(), name)

    def __setattr__(self, name: str, value: object) -> None:
        setattr(_port_or_raise(), name, value)

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        """In a worker, the port's class: ``isinstance(worker_port, ThreadWorkerGlobalScope)`` holds."""
        port = current_port()
        return _WorkerPortProxy if port is None else type(port)

    def __repr__(self) -> str:
        port = current_port()
        return "<worker_port: not in a worker>" if port is None else f"<worker_port of {port.name!r}>"

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("worker_port cannot be copied: it is the port of the worker that uses it")


def worker_port_for(reader: types.FrameType) -> ThreadWorkerGlobalScope:
    """What ``arkworker.worker_port`` is for the code running in ``reader``.

    In a worker thread, read in a function (a handler, the callable script) or by the worker's own script
    (a namespace no other worker shares), it is that worker's port itself, so that ``is`` and
    ``isinstance`` hold. Anything else gets the proxy, which finds the port on each use: a module shared
    by several workers, whose top level ran in one of them, must not keep that one's port.
    """
    port = current_port()
    if port is not None and (
        reader.f_code.co_flags & inspect.CO_OPTIMIZED
        or reader.f_globals.get("__name__") == port._script.module_name
    ):
        return port
    return worker_port


def _port_or_raise() -> ThreadWorkerGlobalScope:
    port = current_port()
    if port is None:
        raise NotInWorkerError(
            "worker_port is only available inside a worker thread "
            f"(this is thread {threading.current_thread().name!r})"
        )
    return port


worker_port = cast("ThreadWorkerGlobalScope", _WorkerPortProxy())
"""Inside a worker thread, that worker's ``ThreadWorkerGlobalScope``; anywhere else using it raises
``NotInWorkerError``."""
