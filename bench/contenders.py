"""The contenders: one adapter class per way for an asyncio host to talk to a worker thread.

Every contender has the same small interface, driven by the scenarios in ``scenarios.py``:

- ``await start()``        create one worker and start its thread (messages may follow at once)
- ``roundtrip(x)``         send ``x``, get it echoed back: an awaitable (a value if ``host == "sync"``)
- ``await stream(n)``      send ``n`` small messages one way; the worker answers once, with the count
- ``await stop()``         shut the worker down; returns once its thread has been joined
- ``transfer_roundtrip(buf)`` (scenario E) move ``buf`` to the worker and back without copying it

and the measured blocks built on it (``block_roundtrips``, ``block_stream``, ``block_startup``,
``memory_sample``), which a contender living in another runtime (Node.js) overrides instead.
A block runs on a fresh host loop with a fresh worker; start and stop are outside the timed part.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import gc
import importlib
import inspect
import itertools
import json
import os
import pickle
import queue
import shutil
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

HERE = Path(__file__).resolve().parent
RUN_PY = HERE / "run.py"
NODE_JS = HERE / "node_pingpong.js"

now = time.perf_counter_ns
cpu_now = time.process_time_ns  # the whole process, every thread

# Control messages. Plain strings: immutable, so arkworker passes them without a copy.
STREAM = "stream"  # queue-based workers: count what follows instead of echoing it
END = "end"  # the stream is over: answer with the count
STOP = "stop"  # queue-based workers: leave the thread
PARK = "park"  # arkworker's worker: hold the worker's thread until PARKED is set (apart.py)
PARKED = threading.Event()


def optional(name: str) -> ModuleType | None:
    """The module ``name``, or None when it is not installed (its contenders are then skipped)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


uvloop = optional("uvloop")
arkworker = optional("arkworker")
janus = optional("janus")
culsans = optional("culsans")
pykka = optional("pykka")
anyio = optional("anyio")
if anyio is not None:
    importlib.import_module("anyio.from_thread")


@dataclass
class RoundtripBlock:
    """One measured block of sequential round trips."""

    samples_ns: list[int]
    cpu_ns: int
    placement: str  # "same" / "split": the busiest worker thread ended on the host's vCPU or not; "?"


# =====================================================================================================
# The interface
# =====================================================================================================
class Contender:
    key: ClassVar[str] = "?"
    label: ClassVar[str] = "?"
    host: ClassVar[str] = "asyncio"  # asyncio | uvloop | sync | external
    scenarios: ClassVar[str] = ""  # the letters of the scenarios it takes part in
    needs: ClassVar[tuple[str, ...]] = ()  # modules that must be importable

    @classmethod
    def missing(cls) -> str | None:
        """Why this contender cannot run here, or None."""
        absent = [name for name in cls.needs if globals().get(name) is None]
        return f"{', '.join(absent)} not installed" if absent else None

    # -- one worker ------------------------------------------------------------------------------
    async def start(self) -> None:
        raise NotImplementedError

    def roundtrip(self, x: Any) -> Any:
        raise NotImplementedError

    async def stream(self, n: int) -> int:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def transfer_roundtrip(self, buf: bytearray) -> Awaitable[bytearray]:
        raise NotImplementedError

    async def roundtrip_once(self, x: Any) -> Any:
        """One round trip outside a hot loop, whatever the host kind."""
        result = self.roundtrip(x)
        return result if self.host == "sync" else await result

    @classmethod
    def prepare(cls, workers: int) -> None:
        """Called before ``workers`` live workers are created in one process (scenario D)."""

    # -- measured blocks -------------------------------------------------------------------------
    @classmethod
    def run_on_host(cls, coro: Awaitable[Any]) -> Any:
        """Run ``coro`` on a fresh host loop of this contender's kind."""
        factory = uvloop.new_event_loop if cls.host == "uvloop" else asyncio.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)  # type: ignore[arg-type]

    @classmethod
    def block_roundtrips(cls, n: int, warm: int, payload: Any = 1, transfer: bool = False) -> RoundtripBlock:
        """``n`` sequential round trips of ``payload`` (each reply is sent again), after ``warm``."""
        return cls.run_on_host(cls()._roundtrips(n, warm, payload, transfer))

    async def _roundtrips(self, n: int, warm: int, payload: Any, transfer: bool) -> RoundtripBlock:
        timed = _timed_sync if self.host == "sync" else _timed_async
        await self.start()
        try:
            op = self.transfer_roundtrip if transfer else self.roundtrip
            _, x = await timed(op, payload, warm)
            gc.collect()
            before, cpu0 = threads_snapshot(), cpu_now()
            samples, x = await timed(op, x, n)
            cpu = cpu_now() - cpu0
            where = placement(before, threads_snapshot(), threading.get_native_id())
        finally:
            await self.stop()
        if type(x) is not type(payload) or len(_sized(x)) != len(_sized(payload)):
            raise AssertionError(f"{self.key}: the echo came back as {type(x).__name__}")
        return RoundtripBlock(samples, cpu, where)

    @classmethod
    def block_stream(cls, n: int, warm: int) -> tuple[int, int]:
        """(wall ns, process CPU ns) to stream ``n`` messages and get the count back, after ``warm``."""
        return cls.run_on_host(cls()._stream(n, warm))

    async def _stream(self, n: int, warm: int) -> tuple[int, int]:
        await self.start()
        try:
            if warm and await self.stream(warm) != warm:
                raise AssertionError(f"{self.key}: wrong count after the warm-up stream")
            gc.collect()
            cpu0, t0 = cpu_now(), now()
            count = await self.stream(n)
            elapsed, cpu = now() - t0, cpu_now() - cpu0
        finally:
            await self.stop()
        if count != n:
            raise AssertionError(f"{self.key}: the worker counted {count} of {n} messages")
        return elapsed, cpu

    @classmethod
    def block_startup(cls, k: int) -> dict[str, list[int]]:
        """``k`` whole lifecycles after an untimed one: ns per phase (start, first_rt, stop, total)."""
        return cls.run_on_host(cls._startups(k))

    @classmethod
    async def _startups(cls, k: int) -> dict[str, list[int]]:
        phases: dict[str, list[int]] = {"start": [], "first_rt": [], "stop": [], "total": []}
        for i in range(k + 1):
            t0 = now()
            worker = cls()
            await worker.start()
            t1 = now()
            if await worker.roundtrip_once(1) != 1:
                raise AssertionError(f"{cls.key}: bad echo")
            t2 = now()
            await worker.stop()
            t3 = now()
            if i:
                for name, ns in (
                    ("start", t1 - t0),
                    ("first_rt", t2 - t1),
                    ("stop", t3 - t2),
                    ("total", t3 - t0),
                ):
                    phases[name].append(ns)
        return phases

    @classmethod
    def memory_sample(cls, n: int, settle_s: float) -> dict[str, Any]:
        """RSS per live idle worker with ``n`` workers, measured in a fresh child process; RSS is read
        after ``settle_s`` seconds of quiet."""
        out = subprocess.run(
            [sys.executable, str(RUN_PY), "--mem-child", cls.key, str(n), str(settle_s)],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    @classmethod
    async def memory_in_process(cls, n: int, settle_s: float) -> dict[str, Any]:
        """The child's side of ``memory_sample``; the workers stay alive to the end (the child exits hard)."""
        cls.prepare(n + 1)
        first = cls()  # one whole lifecycle first, so lazy imports and caches are not counted
        await first.start()
        await first.roundtrip_once(0)
        await first.stop()
        gc.collect()
        await asyncio.sleep(settle_s / 3)
        rss0 = rss_bytes()
        live = []
        for _ in range(n):
            worker = cls()
            await worker.start()
            live.append(worker)
        for worker in live:
            await worker.roundtrip_once(1)
        gc.collect()
        await asyncio.sleep(settle_s)
        rss1 = rss_bytes()
        return {"workers": n, "rss0": rss0, "rss1": rss1, "per_worker": (rss1 - rss0) / n}


def _sized(x: Any) -> Any:
    return x if hasattr(x, "__len__") else (x,)


async def _timed_async(op: Callable[[Any], Awaitable[Any]], x: Any, n: int) -> tuple[list[int], Any]:
    samples = [0] * n
    prev = now()
    for i in range(n):
        x = await op(x)
        t = now()
        samples[i] = t - prev
        prev = t
    return samples, x


async def _timed_sync(op: Callable[[Any], Any], x: Any, n: int) -> tuple[list[int], Any]:
    samples = [0] * n
    prev = now()
    for i in range(n):
        x = op(x)
        t = now()
        samples[i] = t - prev
        prev = t
    return samples, x


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def threads_snapshot(pid: str | int = "self") -> dict[int, tuple[int, int]]:
    """{thread id: (CPU ns run so far, vCPU it last ran on)} from Linux /proc; empty elsewhere."""
    snapshot = {}
    base = f"/proc/{pid}/task"
    try:
        tids = os.listdir(base)
    except OSError:
        return snapshot
    for tid in tids:
        try:
            with open(f"{base}/{tid}/schedstat") as f:
                run_ns = int(f.read().split()[0])
            with open(f"{base}/{tid}/stat") as f:
                vcpu = int(f.read().rsplit(")", 1)[1].split()[36])  # field 39, "processor"
        except (OSError, ValueError, IndexError):
            continue
        snapshot[int(tid)] = (run_ns, vcpu)
    return snapshot


def placement(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], host_tid: int) -> str:
    """Did the thread that worked most during the block (besides the host) end on the host's vCPU?

    Observed, never forced: the kernel decides, and a round trip costs about three times more when the two
    threads sit on different vCPUs of this kind of virtual machine (docs/performance.md).
    """
    if host_tid not in after:
        return "?"
    busiest, most = None, 0
    for tid, (run_ns, _) in after.items():
        worked = run_ns - before.get(tid, (0, 0))[0]
        if tid != host_tid and worked > most:
            busiest, most = tid, worked
    if busiest is None:
        return "?"
    return "same" if after[busiest][1] == after[host_tid][1] else "split"


# =====================================================================================================
# The raw floor: a host loop, one thread running its own loop, call_soon_threadsafe each way
# =====================================================================================================
class Floor(Contender):
    """The least any design of arkworker's shape can do: the host creates a Future and calls
    ``worker_loop.call_soon_threadsafe(echo, x, future)``; the worker calls
    ``host_loop.call_soon_threadsafe(future.set_result, x)``. No copy, no queue, no task."""

    key = "floor"
    label = "raw floor: 2 loops, call_soon_threadsafe + Future"
    scenarios = "ABCDE"
    worker_loop_factory: ClassVar[Callable[[], asyncio.AbstractEventLoop]] = asyncio.new_event_loop

    async def start(self) -> None:
        self.host_loop = asyncio.get_running_loop()
        self.loop = type(self).worker_loop_factory()
        self.to_worker, self.to_host = self._bridges()
        self.exited = self.host_loop.create_future()
        self.count = 0
        self.thread = threading.Thread(target=self._run, name="bench-floor", daemon=True)
        self.thread.start()

    def _bridges(self) -> tuple[Callable[..., object], Callable[..., object]]:
        """How to call a function on the worker's loop and on the host's, from the other thread."""
        return self.loop.call_soon_threadsafe, self.host_loop.call_soon_threadsafe

    def _run(self) -> None:  # worker thread
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()
            self.to_host(self.exited.set_result, None)

    async def stop(self) -> None:
        self.to_worker(self.loop.stop)
        await self._ended()

    async def _ended(self) -> None:
        await self.exited
        self.thread.join()

    def roundtrip(self, x: Any) -> asyncio.Future[Any]:
        future = self.host_loop.create_future()
        self.to_worker(self._echo, x, future)
        return future

    def _echo(self, x: Any, future: asyncio.Future[Any]) -> None:  # worker thread
        self.to_host(future.set_result, x)

    transfer_roundtrip = roundtrip  # everything crosses by reference here

    async def stream(self, n: int) -> int:
        send, count = self.to_worker, self._count
        for i in range(n):
            send(count, i)  # one call_soon_threadsafe, so one wake-up write, per message
        future = self.host_loop.create_future()
        send(self._end, future)
        return await future

    def _count(self, _x: int) -> None:  # worker thread
        self.count += 1

    def _end(self, future: asyncio.Future[int]) -> None:  # worker thread
        count, self.count = self.count, 0
        self.to_host(future.set_result, count)


def _uvloop_factory() -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop()


class FloorUv(Floor):
    key = "floor-uv"
    label = "raw floor on uvloop (host and worker loops)"
    host = "uvloop"
    scenarios = "ABCD"
    needs = ("uvloop",)
    worker_loop_factory = _uvloop_factory


class FloorFd(Floor):
    """The floor with arkworker's wake-up: each loop watches an eventfd (``add_reader``); a call from the
    other thread is appended to a deque and rings it, one ``write``; the loop reads it back, one ``read``,
    and runs the calls. No Handle, no self-pipe. As in arkworker, a host loop has one doorbell for all its
    workers, kept until the loop ends, and each worker's loop one of its own. Without ``os.eventfd`` it
    is the floor itself."""

    key = "floor-fd"
    label = "raw floor woken by an eventfd each way (add_reader + a deque of calls)"
    scenarios = "AC"
    _host_doorbells: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Callable[..., None]]] = (
        weakref.WeakKeyDictionary()
    )

    @classmethod
    def missing(cls) -> str | None:
        return None if hasattr(os, "eventfd") else "no os.eventfd on this system"

    def _bridges(self) -> tuple[Callable[..., object], Callable[..., object]]:
        if not hasattr(os, "eventfd"):
            return super()._bridges()
        to_host = self._host_doorbells.get(self.host_loop)
        if to_host is None:
            to_host = self._host_doorbells[self.host_loop] = self._doorbell(self.host_loop)
        self.worker_fd = -1
        return self._doorbell(self.loop), to_host

    def _doorbell(self, loop: asyncio.AbstractEventLoop) -> Callable[..., None]:
        calls: collections.deque[tuple[Callable[..., object], tuple[Any, ...]]] = collections.deque()
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        ring = functools.partial(os.eventfd_write, fd, 1)

        def rung() -> None:  # on ``loop``
            os.eventfd_read(fd)
            while calls:
                fn, args = calls.popleft()
                fn(*args)

        def call(fn: Callable[..., object], *args: Any) -> None:  # any thread
            calls.append((fn, args))
            ring()

        loop.add_reader(fd, rung)  # before the worker's thread starts; the host's loop is this thread's
        if loop is self.loop:
            self.worker_fd = fd  # closed once the worker's thread has ended
        else:
            weakref.finalize(loop, os.close, fd)  # the host loop's: closed with the loop
        return call

    async def _ended(self) -> None:
        await super()._ended()
        if getattr(self, "worker_fd", -1) >= 0:
            os.close(self.worker_fd)  # its loop is closed


class FloorBatch(Floor):
    """Scenario B only: the best-known one-way design, a deque and one wake-up per batch
    (call_soon_threadsafe only when the worker has no drain pending)."""

    key = "floor-batch"
    label = "raw floor, batched: deque + one wake-up per batch"
    scenarios = "B"

    async def start(self) -> None:
        await super().start()
        self.items: collections.deque[Any] = collections.deque()
        self.drain_pending = False

    async def stream(self, n: int) -> int:
        items, send = self.items, self.to_worker
        for i in range(n):
            items.append(i)
            if not self.drain_pending:
                self.drain_pending = True
                send(self._drain)
        future = self.host_loop.create_future()
        send(self._end_after_drain, future)
        return await future

    def _drain(self) -> None:  # worker thread
        self.drain_pending = False
        items = self.items
        while items:
            items.popleft()
            self.count += 1

    def _end_after_drain(self, future: asyncio.Future[int]) -> None:  # worker thread
        self._drain()
        self._end(future)


class _Event:
    __slots__ = ("data",)

    def __init__(self, data: Any) -> None:
        self.data = data


class FloorOnmessage(FloorBatch):
    """Scenario B only: ``floor-batch`` with the shape B asks of arkworker, and nothing else: the host
    awaits a ``post(x)`` call per message, and the worker calls a handler with an event object per
    message. No checks, no copy decision, no depth count: the least any onmessage runtime can cost."""

    key = "floor-onmessage"
    label = "batched floor + await post(x) + handler(Event(x)) per message"

    async def start(self) -> None:
        await super().start()
        self.no_wait = self.host_loop.create_future()
        self.no_wait.set_result(None)

    def post(self, x: Any) -> asyncio.Future[None]:
        self.items.append(x)
        if not self.drain_pending:
            self.drain_pending = True
            self.to_worker(self._drain)
        return self.no_wait

    async def stream(self, n: int) -> int:
        post = self.post
        for i in range(n):
            await post(i)
        future = self.host_loop.create_future()
        self.to_worker(self._end_after_drain, future)
        return await future

    def onmessage(self, event: _Event) -> None:  # worker thread
        if type(event.data) is int:
            self.count += 1

    def _drain(self) -> None:  # worker thread
        self.drain_pending = False
        items, onmessage = self.items, self.onmessage
        while items:
            onmessage(_Event(items.popleft()))


_SMALL = frozenset({type(None), bool, int, float})  # what crosses without a copy, as in arkworker
_PLAIN = frozenset({type(None), bool, int, float, str, bytes, tuple, list, dict})  # never awaitable


def _copied(x: Any) -> Any:
    return x if type(x) in _SMALL else pickle.loads(pickle.dumps(x, protocol=5))


class FloorRequest(FloorFd):
    """The design limit of scenarios A and C: the least a ``request()`` and a worker's life with
    arkworker's contract can cost.

    A: on top of ``floor-fd`` (arkworker's wake-up), a coroutine per request, an id and a table of pending
    futures (so that a cancelled or orphaned request can be settled), one FIFO each way, shared with
    messages and woken once per batch, an event object for the handler, the test that its result is not
    awaitable, and the copy decision for the request and for the answer. C: the worker reports RUNNING to
    the host once its top level ran, and it ends by a terminate item taken in FIFO order. No state, no
    counters, no error paths, no backpressure, no clean-up of tasks, no exit callbacks."""

    key = "floor-request"
    label = "floor-fd + ids, a FIFO each way, handler(Event(x)), copy decisions, RUNNING report"
    scenarios = "AC"
    TERMINATE = -1  # the request id of the terminate item

    @classmethod
    def missing(cls) -> str | None:
        return None  # without os.eventfd it is built on the floor itself, as arkworker is

    async def start(self) -> None:
        self.ids = itertools.count()
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.inbox: collections.deque[tuple[int, Any]] = collections.deque()
        self.outbox: collections.deque[tuple[int, Any]] = collections.deque()
        self.inbox_woken = self.outbox_woken = False
        self.running = False
        await super().start()

    def _run(self) -> None:  # worker thread
        self.loop.call_soon(self._top_level)
        super()._run()

    def _top_level(self) -> None:  # worker thread: the script's top level ran; tell the host
        self.to_host(self._on_running)

    def _on_running(self) -> None:
        self.running = True

    async def stop(self) -> None:
        self.inbox.append((self.TERMINATE, None))
        if not self.inbox_woken:
            self.inbox_woken = True
            self.to_worker(self._serve)
        await self._ended()

    async def roundtrip(self, x: Any) -> Any:
        request_id = next(self.ids)
        future = self.host_loop.create_future()
        self.pending[request_id] = future
        self.inbox.append((request_id, _copied(x)))
        if not self.inbox_woken:
            self.inbox_woken = True
            self.to_worker(self._serve)
        return await future

    def onmessage(self, event: _Event) -> Any:  # worker thread
        return event.data

    def _serve(self) -> None:  # worker thread
        inbox, outbox = self.inbox, self.outbox
        while inbox or self._rearm_inbox():
            request_id, x = inbox.popleft()
            if request_id == self.TERMINATE:
                self.loop.stop()
                break
            result = self.onmessage(_Event(x))
            if type(result) not in _PLAIN and inspect.isawaitable(result):
                raise NotImplementedError("the floor answers plain values only")
            outbox.append((request_id, _copied(result)))
        if outbox and not self.outbox_woken:
            self.outbox_woken = True
            self.to_host(self._settle)

    def _rearm_inbox(self) -> bool:  # worker thread
        self.inbox_woken = False
        if not self.inbox:
            return False
        self.inbox_woken = True  # an item raced in
        return True

    def _settle(self) -> None:
        outbox, pending = self.outbox, self.pending
        while outbox or self._rearm_outbox():
            request_id, result = outbox.popleft()
            pending.pop(request_id).set_result(result)

    def _rearm_outbox(self) -> bool:
        self.outbox_woken = False
        if not self.outbox:
            return False
        self.outbox_woken = True
        return True


class FloorPickle(Floor):
    """Scenario E only: the floor with the copy arkworker makes, and nothing else: the payload is pickled
    on the sender's thread and unpickled on the receiver's, each way. The least a copying design pays."""

    key = "floor-pickle"
    label = "raw floor, the payload pickled and unpickled each way"
    scenarios = "E"

    async def roundtrip(self, x: Any) -> Any:
        future = self.host_loop.create_future()
        self.to_worker(self._echo_copy, pickle.dumps(x, protocol=5), future)
        return pickle.loads(await future)

    def _echo_copy(self, blob: bytes, future: asyncio.Future[bytes]) -> None:  # worker thread
        self.to_host(future.set_result, pickle.dumps(pickle.loads(blob), protocol=5))

    transfer_roundtrip = Floor.roundtrip  # a transferred buffer is not copied


class RunCoroutineThreadsafe(Floor):
    key = "rcts"
    label = "run_coroutine_threadsafe into a worker loop + wrap_future"
    scenarios = "A"

    def roundtrip(self, x: Any) -> asyncio.Future[Any]:
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_async_echo(x), self.loop))


async def _async_echo(x: Any) -> Any:
    return x


def _echo(x: Any) -> Any:
    return x


# =====================================================================================================
# arkworker
# =====================================================================================================
def _ark_worker(port: Any) -> None:
    """The worker: a request's answer is its data; posted ints are counted until END;
    a bytearray goes back, transferred; PARK holds the thread until PARKED is set."""
    count = 0

    def onmessage(event: Any) -> Any:
        nonlocal count
        data = event.data
        if type(data) is int:
            count += 1
        elif type(data) is bytearray:
            port.post_message(data, transfer=[data])
        elif data == END:
            port.post_message(count)
            count = 0
        elif data == PARK:
            PARKED.wait()
        return data

    port.onmessage = onmessage


class Ark(Contender):
    key = "ark"
    label = "arkworker, asyncio loops"
    scenarios = "ABCDE"
    needs = ("arkworker",)
    loop_factory: ClassVar[str | None] = None
    clone: ClassVar[bool] = True
    max_inbox: ClassVar[int] = 1024  # the default
    replies: AsyncIterator[Any] | None = None

    async def start(self) -> None:
        self.worker = arkworker.ThreadWorker(
            _ark_worker, loop_factory=self.loop_factory, clone=self.clone, max_inbox=self.max_inbox
        )

    def roundtrip(self, x: Any) -> Awaitable[Any]:
        return self.worker.request(x)

    async def transfer_roundtrip(self, buf: bytearray) -> bytearray:
        await self.worker.post_message(buf, transfer=[buf])
        return await self._reply()

    async def stream(self, n: int) -> int:
        post = self.worker.post_message
        for i in range(n):
            await post(i)
        await post(END)
        return await self._reply()

    async def _reply(self) -> Any:
        # The worker's posts, read on first use: a lifecycle in C reads none.
        if self.replies is None:
            self.replies = aiter(self.worker.messages())
        return await anext(self.replies)

    async def stop(self) -> None:
        await self.worker.terminate()

    @classmethod
    def prepare(cls, workers: int) -> None:
        arkworker.set_max_workers(max(workers, 64))


class ArkUvWorker(Ark):
    key = "ark-uvw"
    label = "arkworker, uvloop worker loop, asyncio host"
    scenarios = "AB"
    needs = ("arkworker", "uvloop")
    loop_factory = "uvloop"


class ArkUv(ArkUvWorker):
    key = "ark-uv"
    label = "arkworker, uvloop loops (host and worker)"
    host = "uvloop"
    scenarios = "ABCD"


class ArkBigInbox(Ark):
    """B only: how much of B's cost is the default max_inbox (1024), which makes the host wait and the
    two threads hand over every 1,024 messages, each handover two thread wake-ups."""

    key = "ark-64k"
    label = "arkworker, asyncio loops, max_inbox=65536"
    scenarios = "B"
    max_inbox = 65536


class ArkNoCopy(Ark):
    key = "ark-nocopy"
    label = "arkworker, clone=False (by reference)"
    scenarios = "E"
    clone = False


# =====================================================================================================
# Queue pairs: the worker is a plain thread blocked on a queue
# =====================================================================================================
def _serve_queue(get: Callable[[], Any], put: Callable[[Any], Any]) -> None:
    """Worker thread of the queue pairs: echo each message; between STREAM and END, count instead."""
    counting, count = False, 0
    while (x := get()) != STOP:
        if counting:
            if x == END:
                put(count)
                counting = False
            else:
                count += 1
        elif x == STREAM:
            counting, count = True, 0
        else:
            put(x)


class Janus(Contender):
    """A janus queue each way: the host uses ``async_q``, the worker thread ``sync_q``."""

    key = "janus"
    label = "janus queue pair (host async_q, worker thread sync_q)"
    scenarios = "AB"
    needs = ("janus",)

    @staticmethod
    def make_queue() -> Any:
        return janus.Queue()

    async def start(self) -> None:
        self.inbox, self.outbox = self.make_queue(), self.make_queue()
        self.put, self.get = self.inbox.async_q.put, self.outbox.async_q.get
        self.thread = threading.Thread(
            target=_serve_queue, args=(self.inbox.sync_q.get, self.outbox.sync_q.put), daemon=True
        )
        self.thread.start()

    async def roundtrip(self, x: Any) -> Any:
        await self.put(x)
        return await self.get()

    async def stream(self, n: int) -> int:
        put = self.put
        await put(STREAM)
        for i in range(n):
            await put(i)
        await put(END)
        return await self.get()

    async def stop(self) -> None:
        await self.put(STOP)
        self.thread.join()
        await self.inbox.aclose()
        await self.outbox.aclose()


class Culsans(Janus):
    key = "culsans"
    label = "culsans queue pair (host async_q, worker thread sync_q)"
    needs = ("culsans",)

    @staticmethod
    def make_queue() -> Any:
        return culsans.Queue()


class ThreadQueues(Contender):
    """No event loop at all: the host thread and a worker thread, two ``queue.Queue``."""

    key = "queue"
    label = "plain threads + 2 queue.Queue (sync host)"
    host = "sync"
    scenarios = "ABCD"

    async def start(self) -> None:
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.outbox: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(
            target=_serve_queue, args=(self.inbox.get, self.outbox.put), daemon=True
        )
        self.thread.start()

    def roundtrip(self, x: Any) -> Any:
        self.inbox.put(x)
        return self.outbox.get()

    async def stream(self, n: int) -> int:
        put = self.inbox.put
        put(STREAM)
        for i in range(n):
            put(i)
        put(END)
        return self.outbox.get()

    async def stop(self) -> None:
        self.inbox.put(STOP)
        self.thread.join()


# =====================================================================================================
# pykka: an actor per worker; ask() for a round trip, tell() to stream
# =====================================================================================================
if pykka is not None:

    class _LoopFuture(pykka.ThreadingFuture):  # type: ignore[misc,name-defined]
        """pykka's futures have no done-callback, and awaiting one blocks in ``get()``: this one also
        resolves an asyncio future of the loop that asked, with one call_soon_threadsafe."""

        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.get_running_loop()  # ask() builds the future on the asking thread
            self.awaitable = self.loop.create_future()

        def set(self, value: Any = None) -> None:
            super().set(value)
            self.loop.call_soon_threadsafe(self.awaitable.set_result, value)

        def set_exception(self, exc_info: Any = None) -> None:
            super().set_exception(exc_info)
            self.loop.call_soon_threadsafe(self.awaitable.set_exception, self._result.exc_info[1])

    class _EchoActor(pykka.ThreadingActor):  # type: ignore[misc,name-defined]
        use_daemon_thread = True

        @staticmethod
        def _create_future() -> _LoopFuture:
            return _LoopFuture()

        def __init__(self) -> None:
            super().__init__()
            self.count = 0

        def on_receive(self, message: Any) -> Any:
            if message == END:
                count, self.count = self.count, 0
                return count
            self.count += 1
            return message


class Pykka(Contender):
    key = "pykka"
    label = "pykka actor: ask() (tell() to stream)"
    scenarios = "AB"
    needs = ("pykka",)

    async def start(self) -> None:
        self.ref = _EchoActor.start()

    def roundtrip(self, x: Any) -> Awaitable[Any]:
        return self.ref.ask(x, block=False).awaitable

    async def stream(self, n: int) -> int:
        tell = self.ref.tell
        for i in range(n):
            tell(i)
        return await self.ref.ask(END, block=False).awaitable

    async def stop(self) -> None:
        self.ref.stop()  # blocks until the actor's thread has stopped


# =====================================================================================================
# Worker-loop helpers of the ecosystem
# =====================================================================================================
class AnyioPortal(Contender):
    """anyio's BlockingPortal runs its own event loop thread; the host awaits ``start_task_soon``."""

    key = "anyio-portal"
    label = "anyio BlockingPortal: wrap_future(start_task_soon)"
    scenarios = "A"
    needs = ("anyio",)

    async def start(self) -> None:
        self.portal_cm = anyio.from_thread.start_blocking_portal()
        self.portal = self.portal_cm.__enter__()

    def roundtrip(self, x: Any) -> Awaitable[Any]:
        return asyncio.wrap_future(self.portal.start_task_soon(_async_echo, x))

    async def stop(self) -> None:
        self.portal_cm.__exit__(None, None, None)


class ToThread(Contender):
    """No worker of one's own: each message is a call in the default thread pool."""

    key = "to_thread"
    label = "asyncio.to_thread per message (default pool)"
    scenarios = "A"

    async def start(self) -> None:
        pass

    def roundtrip(self, x: Any) -> Awaitable[Any]:
        return asyncio.to_thread(_echo, x)

    async def stop(self) -> None:
        pass


# =====================================================================================================
# Node.js worker_threads: measured inside Node, driven over a pipe
# =====================================================================================================
class _NodeServer:
    """One long-lived ``node node_pingpong.js serve`` process: a JSON request per line, a JSON reply."""

    proc: ClassVar[subprocess.Popen[str] | None] = None

    @classmethod
    def call(cls, **request: Any) -> dict[str, Any]:
        if cls.proc is None:
            cls.proc = subprocess.Popen(
                ["node", str(NODE_JS), "serve"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        assert cls.proc.stdin is not None
        assert cls.proc.stdout is not None
        cls.proc.stdin.write(json.dumps(request) + "\n")
        cls.proc.stdin.flush()
        line = cls.proc.stdout.readline()
        if not line:
            raise RuntimeError("the Node.js peer exited")
        return json.loads(line)

    @classmethod
    def close(cls) -> None:
        if cls.proc is not None:
            proc, cls.proc = cls.proc, None
            try:
                proc.communicate('{"op": "quit"}\n', timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Node(Contender):
    key = "node"
    label = "Node.js worker_threads postMessage"
    host = "external"
    scenarios = "ABCD"

    @classmethod
    def missing(cls) -> str | None:
        return None if shutil.which("node") else "node is not on PATH"

    @classmethod
    def block_roundtrips(cls, n: int, warm: int, payload: Any = 1, transfer: bool = False) -> RoundtripBlock:
        reply = _NodeServer.call(op="rt", n=n, warm=warm)
        return RoundtripBlock(reply["samples_ns"], reply["cpu_ns"], "?")

    @classmethod
    def block_stream(cls, n: int, warm: int) -> tuple[int, int]:
        reply = _NodeServer.call(op="stream", n=n, warm=warm)
        if reply["count"] != n:
            raise AssertionError(f"node: the worker counted {reply['count']} of {n} messages")
        return reply["ns"], reply["cpu_ns"]

    @classmethod
    def block_startup(cls, k: int) -> dict[str, list[int]]:
        return _NodeServer.call(op="startup", k=k)

    @classmethod
    def memory_sample(cls, n: int, settle_s: float) -> dict[str, Any]:
        out = subprocess.run(
            ["node", "--expose-gc", str(NODE_JS), "mem", str(n), str(settle_s)],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(out.stdout)

    @staticmethod
    def version() -> str | None:
        if not shutil.which("node"):
            return None
        out = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
        return out.stdout.strip()


def close_external() -> None:
    """Stop the helper processes of external contenders."""
    _NodeServer.close()


# Display order; the first two are the references that every ratio is taken against.
ALL: list[type[Contender]] = [
    Floor,
    FloorUv,
    FloorFd,
    FloorBatch,
    FloorOnmessage,
    FloorRequest,
    FloorPickle,
    Ark,
    ArkUvWorker,
    ArkUv,
    ArkBigInbox,
    ArkNoCopy,
    Janus,
    Culsans,
    Pykka,
    AnyioPortal,
    ToThread,
    RunCoroutineThreadsafe,
    ThreadQueues,
    Node,
]
BY_KEY = {cls.key: cls for cls in ALL}
FLOORS = ("floor", "floor-uv")
