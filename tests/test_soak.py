"""A short soak: many worker lifecycles and many messages leave threads, fds and memory flat.

The CI sizes run in seconds. The long soak is the same tests with bigger sizes (see docs/reliability.md)::

    ARKWORKER_SOAK_LIFECYCLES=10000 ARKWORKER_SOAK_MESSAGES=1000000 ARKWORKER_SOAK_WORKERS=100 \\
        python -m pytest tests/test_soak.py -q -s

Run with ``-s`` to see the measured slopes.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import pytest

import arkworker
from arkworker import ThreadWorker, WorkerState

LIFECYCLES = int(os.environ.get("ARKWORKER_SOAK_LIFECYCLES", "500"))
MESSAGES = int(os.environ.get("ARKWORKER_SOAK_MESSAGES", "100000"))
WORKERS = int(os.environ.get("ARKWORKER_SOAK_WORKERS", "20"))
RSS_BOUND = 50 * 1024 * 1024  # bytes of RSS growth allowed over the whole soak
TIMEOUT = 30.0  # seconds any single batch may take before it counts as a hang
# Generous per-test budgets: about 20x the measured cost on a 2-core CI runner, plus start-up.
LIFECYCLE_BUDGET = 60 + LIFECYCLES * 0.05
MESSAGE_BUDGET = 60 + MESSAGES * 0.001
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Sample:
    """What the process holds at one moment."""

    threads: int  # OS threads of this process
    fds: int
    rss: int  # bytes

    @staticmethod
    def take() -> Sample:
        gc.collect()
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * PAGE
        return Sample(len(os.listdir("/proc/self/task")), len(os.listdir("/proc/self/fd")), rss)


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def worker_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("arkworker-soak")]


def lifecycle_script(port: Any) -> None:
    """Answers requests; ``close`` closes the worker; ``fail`` raises (a worker error)."""

    def on_message(e: Any) -> object:
        if e.data == "close":
            port.close()
        elif e.data == "fail":
            raise RuntimeError("soak failure")
        else:
            port.post_message(e.data)
        return e.data

    port.onmessage = on_message


async def one_lifecycle(i: int) -> None:
    """Create a worker, talk to it, and end it one of four ways (terminate, close, error, async with)."""
    ending = i % 4
    if ending == 3:
        async with ThreadWorker(lifecycle_script, name=f"soak-{i}") as w:
            assert await w.request(i) == i
        assert w.exit_code == 0
        return
    w = ThreadWorker(lifecycle_script, name=f"soak-{i}")
    got: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    w.onmessage = lambda e: got.done() or got.set_result(e.data)
    w.onerror = lambda e: None  # a handled error: the worker terminates with exit code 1
    assert await w.request(i) == i
    assert await got == i
    if ending == 0:
        assert await w.terminate() == 0
    elif ending == 1:
        w.post_message("close")
        assert await w.wait() == 0
    else:
        w.post_message("fail")
        assert await w.wait() == 1
    assert w.state is WorkerState.TERMINATED


async def bounded(awaitable: Awaitable[Any]) -> Any:
    return await asyncio.wait_for(awaitable, TIMEOUT)


def report(
    title: str,
    before: Sample,
    after: Sample,
    per: str,
    rss_slope: float,
    fd_slope: float,
    thread_slope: float,
) -> None:
    print(
        f"\n[soak] {title}: threads {before.threads}->{after.threads}, fds {before.fds}->{after.fds}, "
        f"RSS {before.rss / 2**20:.1f}->{after.rss / 2**20:.1f} MiB; slopes per {per}: "
        f"RSS {rss_slope / 1024:+.1f} KiB, fds {fd_slope:+.3f}, threads {thread_slope:+.3f}"
    )


@pytest.mark.timeout(LIFECYCLE_BUDGET)
async def test_worker_lifecycles_leave_threads_fds_and_memory_flat():
    """After many worker lifecycles (every ending: terminate, close, error, async with), threads and fds are back to baseline and RSS stays flat."""
    batch = max(1, WORKERS)
    arkworker.set_max_workers(max(64, batch))  # the conftest restores the default afterwards
    await bounded(asyncio.gather(*(one_lifecycle(-1 - i) for i in range(batch))))  # warm-up
    before = Sample.take()
    xs: list[float] = [0]
    samples = [before]
    done = 0
    while done < LIFECYCLES:
        n = min(batch, LIFECYCLES - done)
        await bounded(asyncio.gather(*(one_lifecycle(done + i) for i in range(n))))
        done += n
        assert not worker_threads(), "an ended worker left its thread alive"
        xs.append(done)
        samples.append(Sample.take())
    after = samples[-1]
    per = 1000
    report(
        f"{LIFECYCLES} lifecycles, {batch} at a time",
        before,
        after,
        f"{per} lifecycles",
        slope(xs, [s.rss for s in samples]) * per,
        slope(xs, [s.fds for s in samples]) * per,
        slope(xs, [s.threads for s in samples]) * per,
    )
    assert after.threads == before.threads
    assert after.fds == before.fds
    assert after.rss - before.rss < RSS_BOUND


def counting_echo(port: Any) -> None:
    """Posts every message back; answers the request ``"count"`` with how many it handled."""
    handled = 0

    def on_message(e: Any) -> object:
        nonlocal handled
        if e.data == "count":
            return handled
        handled += 1
        port.post_message(e.data)
        return None

    port.onmessage = on_message


@pytest.mark.timeout(MESSAGE_BUDGET)
async def test_many_messages_across_concurrent_workers_leave_resources_flat():
    """Messages posted with backpressure to many concurrent workers all arrive, are echoed in order, and leave threads, fds and RSS flat."""
    per_worker = max(1, MESSAGES // WORKERS)
    chunk = max(1, per_worker // 10)
    arkworker.set_max_workers(max(64, WORKERS))  # the conftest restores the default afterwards
    async with ThreadWorker(counting_echo, name="soak-warm-up") as warm_up:  # the host loop's doorbell
        await bounded(warm_up.request("count"))
    before = Sample.take()
    workers = [ThreadWorker(counting_echo, name=f"soak-m{i}") for i in range(WORKERS)]
    received = [0] * WORKERS
    in_order = [True] * WORKERS

    def receiver(index: int) -> Any:
        def on_message(e: Any) -> None:
            in_order[index] &= e.data == received[index]
            received[index] += 1

        return on_message

    for index, w in enumerate(workers):
        w.onmessage = receiver(index)

    async def produce(w: ThreadWorker, start: int, stop: int) -> None:
        for n in range(start, stop):
            await w.post_message(n)  # backpressure keeps the inbox near max_inbox

    xs: list[float] = []
    samples: list[Sample] = []
    try:
        sent = 0
        while sent < per_worker:
            stop = min(per_worker, sent + chunk)
            await bounded(asyncio.gather(*(produce(w, sent, stop) for w in workers)))
            sent = stop
            xs.append(sent * WORKERS)
            samples.append(Sample.take())
        counts = await bounded(asyncio.gather(*(w.request("count") for w in workers)))
        assert counts == [per_worker] * WORKERS
    finally:
        codes = await bounded(asyncio.gather(*(w.terminate() for w in workers)))
    assert codes == [0] * WORKERS
    assert received == [per_worker] * WORKERS, "every echo is dispatched before the worker's exit"
    assert all(in_order)
    del workers
    after = Sample.take()
    per = 100_000
    report(
        f"{per_worker * WORKERS} messages (+ as many echoes) across {WORKERS} workers",
        before,
        after,
        f"{per} messages",
        slope(xs, [s.rss for s in samples]) * per,
        slope(xs, [s.fds for s in samples]) * per,
        slope(xs, [s.threads for s in samples]) * per,
    )
    assert not worker_threads()
    assert after.threads == before.threads
    assert after.fds == before.fds
    assert after.rss - before.rss < RSS_BOUND
