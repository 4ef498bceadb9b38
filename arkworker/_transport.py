"""The one module that crosses threads: how a worker runs and how items travel between two loops.

Nothing outside this module calls ``call_soon_threadsafe``, blocks on another thread or knows that a
worker is a thread. Another transport (a subinterpreter, a remote process) would replace ``WorkerThread``
and keep the ``Channel`` contract:

- ``put`` never blocks and keeps FIFO order; the receiver is woken at most once per batch: a wake-up is
  sent only when none is pending, and the receiver re-arms it only when it finds the channel empty.
  A worker's inbox starts as woken: the worker loop's first callback drains it (unless the top level
  fails), so what is put before wakes no one.
- A wake-up rings the receiver loop's doorbell: an eventfd that the loop watches (``add_reader``), with
  the calls that rang it. Ringing it is one ``write``, and one ``read`` answers every ring since; where
  ``call_soon_threadsafe`` costs a Handle, a socket write and two reads. It takes 40 % off a round trip
  on asyncio's loops. Each loop has one doorbell, shared by the channels to it. uvloop's
  ``call_soon_threadsafe`` is an eventfd write already (and skipped while one is pending), so its loops,
  and loops that watch no descriptors or a system without eventfds, are woken by it instead, as every
  loop is for the rest of what crosses. A worker's default loop, ``WorkerLoop``, has no other self-pipe:
  its ``call_soon_threadsafe`` rings its doorbell too.
- ``depth`` counts items put and not yet marked ``done`` by the receiver; ``wait_for_space`` lets the
  sender wait while it is above the limit. Waiting senders are released once the depth is down to half
  the limit, so a sender at the limit costs one wake-up per half-inbox, not one per message.
- ``put_urgent`` items bypass the FIFO (cancellations, global calls) and always wake the receiver.
- ``put_quietly`` appends without a wake-up, which ``wake`` (or any later ``put``) sends: a receiver
  woken while the sender still runs Python would only block on the GIL. The worker answers a request
  quietly and wakes the host as its pump returns to the loop; the host wakes the worker for a request
  as the answer is awaited.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures.thread
import contextlib
import ctypes
import functools
import inspect
import os
import selectors
import sys
import threading
import weakref
from collections.abc import Callable
from typing import TypeVar, cast

from ._events import ThreadWorkerPriority

T = TypeVar("T")


def run_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., object], *args: object) -> bool:
    """Schedule ``fn(*args)`` on ``loop`` from any thread; False if that loop has closed."""
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop is closed
        return False
    return True


def _set_result_if_pending(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def resolve_soon(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> bool:
    """Resolve ``future`` (of ``loop``) from any thread; False if that loop has closed."""
    return run_soon(loop, _set_result_if_pending, future)


def _nothing(*_: object) -> None:
    pass


class Doorbell:
    """A loop's doorbell: an eventfd that the loop watches, and the calls that rang it (see above)."""

    __slots__ = (
        "__weakref__",
        "_calls",
        "_fd",
        "_pending",
        "_pid",
        "_ring",
        "channels",
        "watched",
        "worker_loop",
    )

    def __init__(self, fd: int) -> None:
        # Open until neither the loop watches it nor an open channel may ring it (or until it is freed).
        self._fd = fd
        # Always this one list: a sender may have read the attribute before the loop drains it. A list, as
        # it rarely holds more than one call: a deque would take 600 bytes at once.
        self._calls: list[Callable[[], object]] = []
        self._pending = False  # True from a ring until the loop has read it back
        self._ring: Callable[[], object] = functools.partial(os.eventfd_write, fd, 1)
        self._pid = _pid  # the process whose loop answers (a forked child shares the eventfd)
        self.watched = True  # until unwatch_doorbell()
        # Open channels to the loop: counted on the loop's thread, or, for a worker's inbox, on its host's
        # while the worker's thread has not started or has ended.
        self.channels = 0
        # A worker's own loop: its host may ring it until the worker's thread has ended, whatever the loop
        # ends first, so only the loop's close() (a WorkerLoop's) or WorkerThread.close() unwatches it.
        self.worker_loop = False

    def release(self) -> None:
        """A channel to the loop closed, or the loop stopped watching: close the eventfd if no one is left."""
        if self.channels == 0 and not self.watched and self._fd >= 0:
            fd, self._fd = self._fd, -1
            self._ring = _nothing
            os.close(fd)

    def __del__(self, _close: Callable[[int], None] = os.close) -> None:
        if self._fd >= 0:
            _close(self._fd)

    def call(self, fn: Callable[[], object]) -> None:
        """Any thread: call ``fn()`` on the loop soon."""
        self._calls.append(fn)
        if not self._pending:
            self._pending = True
            self._ring()

    def wake(self) -> None:
        """Any thread: wake the loop for what is already in its queue (a ``WorkerLoop``'s self-pipe)."""
        if not self._pending:
            self._pending = True
            self._ring()

    def _answer(self) -> None:
        # The loop's thread, as the eventfd reads.
        if self._pid != _pid or self._fd < 0:
            # A forked child running its copy of the loop, on the epoll instance it shares with the parent:
            # reading the ring would take the parent's wake-up, and a channel rings only once per batch.
            # Or a wake-up that came in the pass in which the doorbell closed.
            return
        try:
            os.eventfd_read(self._fd)
        except BlockingIOError:  # a readiness reported with no ring (libuv allows them): nothing came
            return
        self._pending = False  # read, and not yet called: a call from now on rings again
        calls = self._calls
        try:
            while calls:
                calls.pop(0)()
        except BaseException:
            if calls:  # the rest runs in the next pass
                self._pending = True
                self._ring()
            raise


def doorbell(loop: asyncio.AbstractEventLoop) -> Doorbell | None:
    """``loop``'s doorbell, made on first use; None if it has none."""
    known = _doorbells.get(loop)
    if known is not None:
        return known()
    bell = _new_doorbell(loop)
    _doorbells[loop] = _none if bell is None else weakref.ref(bell)
    return bell


def unwatch_doorbell(loop: asyncio.AbstractEventLoop, *, loop_ended: bool = False) -> None:
    """``loop``'s thread, as it ends: it stops watching its doorbell, which closes once the last channel
    that may ring it has closed too (at once if there is none).

    ``loop_ended``: the end of a host loop (``shutdown_asyncgens``); a worker's own loop is left watching.
    """
    bell = _doorbells.get(loop, _none)()
    if bell is None or (loop_ended and bell.worker_loop):
        return
    del _doorbells[loop]
    if not loop.is_closed() and bell._pid == _pid:  # a forked child shares the parent's epoll instance
        loop.remove_reader(bell._fd)
    bell.watched = False
    bell.release()


class WorkerLoop(asyncio.SelectorEventLoop):
    """A worker's default loop: asyncio's own, whose self-pipe is its doorbell.

    ``call_soon_threadsafe`` rings the doorbell instead of writing to a socket pair, so the loop is made
    and closed faster, holds one descriptor for two, and each wake-up is one ``write``. The socket pair
    also carried signals, which never reach a worker's loop: only the main thread's loop takes them.
    """

    def __init__(self, bell: Doorbell) -> None:
        self._bell = bell  # before the constructor makes the self-pipe
        super().__init__()

    def _make_self_pipe(self) -> None:
        # The loop's constructor, before it can tell transports' descriptors (add_reader would ask).
        self._add_reader(self._bell._fd, self._bell._answer)  # type: ignore[attr-defined]
        _doorbells[self] = weakref.ref(self._bell)

    def _close_self_pipe(self) -> None:
        # close(), on the loop's thread; the eventfd stays open while a channel may still ring it.
        unwatch_doorbell(self)

    def _write_to_self(self) -> None:
        # Any thread: call_soon_threadsafe, once its callback is queued.
        self._bell.wake()

    def add_signal_handler(self, sig: int, callback: Callable[..., object], *args: object) -> None:
        """Checks its arguments as asyncio's loop does, then raises ``RuntimeError``, as asyncio's loop does
        outside the main thread."""
        if inspect.iscoroutine(callback) or inspect.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)  # type: ignore[attr-defined]
        self._check_closed()  # type: ignore[attr-defined]
        raise RuntimeError("a worker's loop cannot handle signals: only the main thread's loop can")


def new_worker_loop() -> asyncio.AbstractEventLoop:
    """A worker's default loop: what ``asyncio.new_event_loop()`` makes, as a ``WorkerLoop`` where that
    is asyncio's own selector loop (nothing replaced it) and the system has eventfds."""
    policy = _event_loop_policy()
    if (
        asyncio.new_event_loop is _NEW_EVENT_LOOP
        and type(policy) is _ASYNCIO_POLICY
        and getattr(policy, "_loop_factory", None) is asyncio.SelectorEventLoop
        and hasattr(os, "eventfd")
    ):
        try:
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except OSError:  # no descriptor left: asyncio's own loop says so, or gets one
            return asyncio.new_event_loop()
        return WorkerLoop(Doorbell(fd))
    return asyncio.new_event_loop()


# What asyncio sets up on this system, under which new_worker_loop makes WorkerLoops.
_NEW_EVENT_LOOP = asyncio.new_event_loop
_event_loop_policy = getattr(asyncio.events, "_get_event_loop_policy", asyncio.get_event_loop_policy)
_ASYNCIO_POLICY = getattr(getattr(asyncio, "unix_events", None), "_UnixDefaultEventLoopPolicy", None)


def _new_doorbell(loop: asyncio.AbstractEventLoop) -> Doorbell | None:
    if not hasattr(os, "eventfd") or not isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop):
        return None  # no eventfd, or a loop that is not asyncio's own (uvloop, a proactor loop)
    try:
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    except OSError:  # no descriptor left
        return None
    if fd >= _FD_SETSIZE and isinstance(getattr(loop, "_selector", None), selectors.SelectSelector):
        os.close(fd)  # select() takes it, then fails in every pass of the loop
        return None
    bell = Doorbell(fd)
    try:
        loop.add_reader(fd, bell._answer)
    except Exception:  # noqa: BLE001 - a loop that cannot watch it is woken as before
        return None  # and the doorbell, freed, closes its eventfd
    return bell


# Each loop's doorbell, held weakly: the loop holds it while it watches it, and so do the channels that
# may ring it. Freed (with a loop closed by hand, say), it closes its eventfd.
_doorbells: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Callable[[], Doorbell | None]]
_doorbells = weakref.WeakKeyDictionary()


def _none() -> None:  # for a loop that has no doorbell
    return None


_FD_SETSIZE = 1024
_pid = os.getpid()


def _forked() -> None:
    global _pid  # noqa: PLW0603 - which process this is
    _pid = os.getpid()
    _worker_loops.clear()  # a forked child has none of its parent's worker threads


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


class Channel:
    """One direction of traffic between a sender thread and the receiver's event loop."""

    def __init__(
        self,
        receiver: asyncio.AbstractEventLoop,
        sender: asyncio.AbstractEventLoop,
        limit: int,
        *,
        drained_first: bool = False,
    ) -> None:
        self._receiver = receiver
        self._sender = sender
        self.limit = limit
        self._low_water = limit // 2
        # FIFO. The receiver pops items off the left while it is not empty, then calls ``rearm``.
        self.items: collections.deque[object] = collections.deque()
        # Receiver: truthy while urgent items wait (take them with take_urgent). Rare and short: a list.
        self.urgent: list[object] = []
        # True iff a wake-up is scheduled or the receiver is still working through the items. A receiver
        # that drains the channel in its first callback (``drained_first``) is as good as woken already.
        self._wake_pending = drained_first
        self.sent = 0  # written by the sender only
        self.done_count = 0  # written by the receiver only
        self._space_wanted = False
        self._lifted = False  # True once the receiver takes everything (lift_limit)
        self._space_waiters: list[asyncio.Future[None]] = []
        self._no_wait: asyncio.Future[None] = sender.create_future()
        self._no_wait.set_result(None)
        # Called on the receiver's loop: items are waiting / urgent items are waiting. Each is read when the
        # wake-up runs, so a receiver may set it after items came, as long as it drains once itself then.
        self.on_ready: Callable[[], object] = _nothing
        self.on_urgent: Callable[[], object] = _nothing
        # Any thread: wake the receiver. A wake-up after the receiver's loop closed wakes no one.
        self._bell = doorbell(receiver)
        if self._bell is not None:
            self._bell.channels += 1
        self._ring: Callable[[], object] = (
            functools.partial(self._bell.call, self._rung)
            if self._bell is not None
            else functools.partial(run_soon, receiver, self._rung)
        )

    # -- sender's thread ---------------------------------------------------------------------------

    def put_quietly(self, item: object) -> None:
        """Append a counted ``item`` without waking the receiver: ``wake`` or a later ``put`` does."""
        self.sent += 1
        self.items.append(item)

    def wake(self) -> None:
        """Wake the receiver for the items put quietly, unless a wake-up is pending already."""
        if not self._wake_pending and self.items:
            self._wake_pending = True
            self._ring()

    def put(self, item: object, *, counted: bool = True) -> None:
        """Append ``item``. A sender that must know whether the receiver will take it asks
        ``receiver_closed()`` afterwards.

        An item put with ``counted=False`` (a control item) takes no part in ``depth``, and the receiver must
        not mark it done.
        """
        if counted:
            self.sent += 1  # before the append: the receiver may take the item at once
        self.items.append(item)
        if not self._wake_pending:
            self._wake_pending = True
            self._ring()

    def receiver_closed(self) -> bool:
        """True iff the receiver's loop has closed: nothing put from now on will be taken."""
        return self._receiver.is_closed()

    def send(self, item: object) -> asyncio.Future[None]:
        """Put a message and return ``wait_for_space()``: posting's hot path, in one call.

        A message put after the receiver's loop closed is counted as undelivered, not refused.
        """
        self.sent += 1  # put(), inlined: this is every post's path
        self.items.append(item)
        if not self._wake_pending:
            self._wake_pending = True
            self._ring()
        if self.sent - self.done_count <= self.limit:
            return self._no_wait
        return self.wait_for_space()

    def put_urgent(self, item: object) -> bool:
        """Deliver ``item`` ahead of the FIFO; False if the receiver's loop has closed."""
        self.urgent.append(item)
        return run_soon(self._receiver, self.on_urgent)

    def wait_for_space(self) -> asyncio.Future[None]:
        """Sender's loop: a future that resolves once ``depth`` is at most ``limit``, or, once the limit
        is lifted, on the loop's next pass."""
        if self.sent - self.done_count <= self.limit:
            return self._no_wait
        future = self._sender.create_future()
        if self._lifted:
            # The sender does not wait for the receiver, but it still yields to its loop: a task that
            # posts in a loop must not starve the exit that is about to cancel it.
            self._sender.call_soon(_set_result_if_pending, future)
            return future
        self._space_waiters.append(future)
        self._space_wanted = True
        if self._lifted or self.sent - self.done_count <= self.limit:  # changed before it saw the flag
            self._release_space()
        return future

    def lift_limit(self) -> None:
        """Any thread: the receiver takes everything from now on, however deep the channel gets: the
        senders waiting for space go on, and no sender waits for the receiver any more."""
        self._lifted = True
        # The limit is lifted before the flag is read, and a waiting sender raises the flag before it
        # reads ``_lifted`` again: if we see no flag, it sees the lifted limit. No flag, no wake-up.
        if self._space_wanted:
            run_soon(self._sender, self._release_space)

    def fail_space_waiters(self, error: Callable[[], BaseException]) -> None:
        """Sender's loop: settle every space waiter with a fresh ``error()`` (the receiver is gone)."""
        waiters, self._space_waiters = self._space_waiters, []
        for future in waiters:
            if not future.done():
                future.set_exception(error())
                # A post from sync code may never be awaited: awaiting still raises, but an unawaited
                # one is not reported as "exception was never retrieved" (the loss is counted anyway).
                future.exception()

    def _release_space(self) -> None:
        if not self._lifted and self.sent - self.done_count > self.limit:
            self._space_wanted = True
            if self.sent - self.done_count > self.limit:
                return
        self._space_wanted = False
        waiters, self._space_waiters = self._space_waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    def close(self) -> None:
        """Once no one puts any more: a put from now on wakes no one, and the doorbell may close."""
        self._ring = _nothing
        bell, self._bell = self._bell, None
        if bell is not None:
            bell.channels -= 1
            bell.release()

    # -- receiver's loop ---------------------------------------------------------------------------

    def _rung(self) -> None:
        self.on_ready()

    @property
    def depth(self) -> int:
        """Items put and not yet marked done."""
        return self.sent - self.done_count

    def rearm(self) -> bool:
        """The receiver found ``items`` empty: re-arm the wake-up.

        True iff an item raced in meanwhile: take it now (its sender may also have woken us, harmlessly).
        """
        self._wake_pending = False
        if not self.items:
            return False
        self._wake_pending = True
        return True

    def take_urgent(self) -> list[object]:
        """Every urgent item waiting, oldest first."""
        taken = []
        while self.urgent:
            taken.append(self.urgent.pop(0))  # one atomic pop at a time: a put may race with us
        return taken

    def mark_done(self, count: int = 1) -> None:
        """``count`` items are fully consumed; may let a sender waiting for space go on."""
        self.done_count += count
        if self._space_wanted and self.sent - self.done_count <= self._low_water:
            self._space_wanted = False
            run_soon(self._sender, self._release_space)


_HIDDEN = object()  # a loop attribute that cannot be read (uvloop's)


def _is_uvloop_factory(factory: Callable[[], asyncio.AbstractEventLoop]) -> bool:
    """True iff ``factory`` is ``uvloop.new_event_loop`` itself, whose loops have no default executor."""
    name = (getattr(factory, "__module__", None), getattr(factory, "__name__", None))
    return name == ("uvloop", "new_event_loop")


# The pool threads that concurrent.futures joins at interpreter exit, before atexit runs.
_JOINED_AT_EXIT: dict[threading.Thread, object] = getattr(concurrent.futures.thread, "_threads_queues", {})


class WorkerPool(concurrent.futures.ThreadPoolExecutor):
    """A worker loop's default executor (``asyncio.to_thread``, ``run_in_executor(None, ...)``): asyncio's
    own kind of pool, made on first use as asyncio makes its own, except that interpreter exit does not
    wait for its threads. concurrent.futures joins every pool thread before ``atexit`` runs, so a worker
    stuck in one would hang the exit; it is reported and abandoned instead, as any stuck worker is.
    """

    def __init__(self, thread_name_prefix: str) -> None:  # the pool itself starts on first use
        self.started = False
        self._prefix = thread_name_prefix

    def submit(
        self, fn: Callable[..., T], /, *args: object, **kwargs: object
    ) -> concurrent.futures.Future[T]:
        """Worker thread (asyncio calls it): run ``fn`` in a pool thread."""
        if not self.started:
            super().__init__(thread_name_prefix=self._prefix)
            self.started = True
        future = super().submit(fn, *args, **kwargs)
        for thread in self._threads:
            if thread.daemon:  # made by the worker's daemon thread (a plain thread's would be joined)
                _JOINED_AT_EXIT.pop(thread, None)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self.started:
            super().shutdown(wait, cancel_futures=cancel_futures)


class BlockingReply:
    """A value one thread blocks for while another thread's loop computes it."""

    __slots__ = ("_error", "_event", "_value")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._value: object = None
        self._error: BaseException | None = None

    def set(self, value: object = None, error: BaseException | None = None) -> None:
        """Any thread: deliver the outcome; only the first call counts."""
        if not self._event.is_set():
            self._value, self._error = value, error
            self._event.set()

    def wait(self, timeout: float) -> object:
        """Block the calling thread for the outcome; raises ``TimeoutError`` after ``timeout`` seconds."""
        if not self._event.wait(timeout):
            raise TimeoutError
        if self._error is not None:
            raise self._error
        return self._value


# The loop of every worker whose thread has not ended.
_worker_loops: set[asyncio.AbstractEventLoop] = set()


class WorkerThread:
    """A worker's own event loop, running on a dedicated OS thread, and its two channels.

    The loop is built on the creating thread, so the inbox accepts items before the thread runs.
    """

    def __init__(
        self,
        *,
        host_loop: asyncio.AbstractEventLoop,
        loop_factory: Callable[[], asyncio.AbstractEventLoop],
        thread_name: str,
        os_name: str,
        priority: ThreadWorkerPriority | None,
        limit: int,
    ) -> None:
        self.loop = loop_factory()
        if not isinstance(self.loop, asyncio.AbstractEventLoop):
            raise TypeError(f"it must return an event loop, not {type(self.loop).__name__}")
        if self.loop in _worker_loops:  # its thread may not have started it yet
            raise ValueError("it must return a new event loop, not the loop of another worker")
        if self.loop.is_running() or self.loop.is_closed():  # the host's own loop, say
            state = "running" if self.loop.is_running() else "closed"
            raise ValueError(f"it must return a new event loop, not a {state} one")
        made: list[Channel] = []
        try:
            # The loop's default executor, unless the loop_factory set one (or may have: a uvloop loop
            # does not show it, and only uvloop's own factory surely sets none).
            executor = getattr(self.loop, "_default_executor", _HIDDEN)
            self.pool: WorkerPool | None = None
            if executor is None or (executor is _HIDDEN and _is_uvloop_factory(loop_factory)):
                self.pool = WorkerPool(f"{thread_name}-pool")
                self.loop.set_default_executor(self.pool)
            self.inbox = Channel(receiver=self.loop, sender=host_loop, limit=limit, drained_first=True)
            made.append(self.inbox)
            self.outbox = Channel(receiver=host_loop, sender=self.loop, limit=limit)
        except BaseException:
            for channel in made:
                channel.close()
            self.loop.close()
            unwatch_doorbell(self.loop)
            raise
        kind = type(self.loop)
        # asyncio's own loop, whose bookkeeping tells when shutdown_asyncgens() and
        # shutdown_default_executor() have nothing to do (see loop_is_clean).
        self._plain_asyncio = (
            kind.shutdown_asyncgens is asyncio.BaseEventLoop.shutdown_asyncgens
            and kind.shutdown_default_executor is asyncio.BaseEventLoop.shutdown_default_executor
            and hasattr(self.loop, "_asyncgens")
        )
        if self.inbox._bell is not None:  # the worker loop's doorbell, made for its inbox
            self.inbox._bell.worker_loop = True
        self._os_name = _kernel_thread_name(os_name)
        self._priority = priority
        self.thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._wrap_up: Callable[[BaseException | None], object] = _nothing
        self._on_end: Callable[[BaseException | None], None] | None = None
        self._ended = False  # True once end() was called
        self._crash: BaseException | None = None  # what the worker died of, if anything
        self._never_ran = False  # True iff starting the thread failed
        # Held by the host until Thread.start() has returned; the new thread takes it before anything else.
        # So the host runs on first (and queues what it posts at once) while the worker waits for the GIL,
        # instead of the GIL going back and forth between them as the worker's loop starts.
        self._host_done = threading.Lock()
        self._host_done.acquire()
        _worker_loops.add(self.loop)  # until the thread ends, or the transport closes if it never runs

    def start(
        self,
        begin: Callable[[], object],
        wrap_up: Callable[[BaseException | None], object],
        on_end: Callable[[BaseException | None], None],
    ) -> None:
        """Run the new thread's loop: ``begin()`` is its first callback, and it runs until ``end()``.

        ``begin()`` must drain the inbox: what is put before it runs wakes no one. The new thread waits
        until this has returned, then for the GIL, so what the host posts next usually comes first.

        ``on_end(crash)`` is the thread's very last call. If an exception such as ``SystemExit`` escapes a
        callback and stops the loop before ``end()``, the first is the crash. Each time the loop stops
        before ``end()`` (so too if the worker's code stops it), ``wrap_up(exc)`` is called on the worker
        thread with what escaped, if anything, and the loop runs on: the clean-up still happens.
        """
        self._wrap_up = wrap_up
        self._on_end = on_end
        self.loop.call_soon(begin)
        try:
            self.thread.start()
        except BaseException:
            # The OS gave no thread ("can't start new thread"), or the host was interrupted (say, by
            # KeyboardInterrupt) before or after the OS thread was made: either way this worker never runs.
            # A thread that exists sees the flag once it holds the gate, and returns at once.
            self._never_ran = True  # the caller closes this transport
            raise
        finally:  # whatever happened: a thread that exists must not hang at the gate
            self._host_done.release()

    def end(self) -> None:
        """Worker thread: the life is over; the loop stops at the end of its current pass."""
        self._ended = True
        self.loop.stop()

    def crash(self, exc: BaseException) -> None:
        """Worker thread: the worker dies of ``exc``, reported as its thread's crash (the first one)."""
        if self._crash is None:
            self._crash = exc

    def _run(self) -> None:
        # Worker thread.
        self._host_done.acquire()
        if self._never_ran:  # the host gave up on this thread while it started: nothing of it may run
            return
        assert self._on_end is not None
        loop = self.loop
        try:
            if _PRCTL is not None and self._os_name:  # best effort, Linux only
                _PRCTL(_PR_SET_NAME, self._os_name, 0, 0, 0)
            _apply_priority(self._priority)
            # Not asyncio.Runner: its close() calls asyncio.all_tasks(), which copies every task of every
            # thread and, with hundreds of workers ending at once, retries for seconds. The worker's
            # wind-down cancels and awaits the tasks it knows of.
            while not self._ended:
                escaped = None
                try:
                    loop.run_forever()
                except BaseException as exc:  # noqa: BLE001 - reported through on_end
                    self.crash(exc)
                    escaped = exc
                if not self._ended:
                    self._wrap_up(escaped)
        except BaseException as exc:  # noqa: BLE001 - the thread's end is reported, never lost
            self.crash(exc)
        finally:
            loop.close()
            _worker_loops.discard(loop)
            self._on_end(self._crash)

    def close(self) -> None:
        """Host thread, once the thread has ended or if it never ran: close the worker's loop and both
        channels, and drop the callbacks both sides set on them and on the loop.

        The callbacks tie the handle, the port and this transport in cycles; without them, all of it is
        freed with the handle, at once, instead of by the garbage collector.
        """
        if not self.loop.is_closed():  # the thread never ran
            self.loop.close()
        _worker_loops.discard(self.loop)
        unwatch_doorbell(self.loop)  # closed as the channels close: this inbox, and its children's outboxes
        for channel in (self.inbox, self.outbox):
            channel.close()
            channel.on_ready = channel.on_urgent = _nothing
        self._wrap_up = _nothing
        self._on_end = None
        self.loop.set_exception_handler(None)
        self.loop.set_task_factory(None)

    def executor_used(self) -> bool:
        """Worker thread: False iff the loop's default executor is still this worker's pool, never used.

        A uvloop loop does not show its executor: there the pool is taken to be it, as nothing but the
        worker's code could have replaced it.
        """
        pool = self.pool
        return pool is None or pool.started or getattr(self.loop, "_default_executor", pool) is not pool

    def loop_is_clean(self) -> bool:
        """Worker thread: True iff the loop surely has no live async generator and no default executor at
        work, so that ``shutdown_asyncgens()`` and ``shutdown_default_executor()`` have nothing to do.

        It reads the bookkeeping of asyncio's own loops, as those two methods do first; for any other loop
        (uvloop), or one that overrides them, it is False, and they run.
        """
        return self._plain_asyncio and not self.loop._asyncgens and not self.executor_used()  # type: ignore[attr-defined]

    def join(self, timeout: float | None = None) -> bool:
        """Block until the thread ended (or ``timeout``); True iff it has."""
        if self._never_ran:
            return True
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def is_alive(self) -> bool:
        """True until the thread has really ended; a thread not started yet counts as alive."""
        return not self._never_ran and (self.thread.is_alive() or self.thread.ident is None)


def _kernel_thread_name(name: str) -> bytes:
    """``name`` as Linux keeps a thread's name: at most 15 bytes, cut at a character's boundary."""
    return name.encode("utf-8", "replace")[:15].decode("utf-8", "ignore").encode("utf-8")


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        # The process's own symbols, libc's among them. PyDLL keeps the GIL across the call: prctl
        # returns at once, and letting go of the GIL and taking it again would only cost time.
        return cast("Callable[..., int]", ctypes.PyDLL(None).prctl)
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_NAME = 15  # names the calling thread


# Nice offsets from the creating thread's nice value; IDLE goes straight to the weakest, 19.
_NICE_OFFSET = {
    ThreadWorkerPriority.HIGH: -5,
    ThreadWorkerPriority.MEDIUM: 0,
    ThreadWorkerPriority.LOW: 5,
    ThreadWorkerPriority.IDLE: 19,
    ThreadWorkerPriority.DEADLINE: -10,
    ThreadWorkerPriority.VIP: -15,
}


def _apply_priority(priority: ThreadWorkerPriority | None) -> None:
    # Worker thread. Linux keeps a nice value per thread; elsewhere this is a documented no-op.
    if priority is None or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    with contextlib.suppress(OSError):
        current = os.getpriority(os.PRIO_PROCESS, tid)
        offset = _NICE_OFFSET[priority]
        target = 19 if priority is ThreadWorkerPriority.IDLE else max(-20, min(19, current + offset))
        if target != current:
            os.setpriority(os.PRIO_PROCESS, tid, target)
