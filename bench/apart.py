"""What each side of arkworker costs, measured apart: the figures behind docs/performance.md.

    python bench/apart.py            (about a minute)
    python bench/apart.py --quick    (small sizes, a few seconds: a smoke test, not a measurement)

run.py times arkworker side by side with the floors; this takes the time apart, on one worker:

- throughput: the host's cost per ``await post_message(i)`` while the worker's thread is parked, then the
  worker's cost per message (bench B's handler) while the host only waits;
- round trip: Python function calls per round trip on each thread (cProfile; both threads together from
  Python 3.12 on), arkworker and the floor;
- start-up: the host's time in ``ThreadWorker(...)`` against the floor's ``start()``;
- copy: a round trip of bench E's 3-key dict with ``clone=True``, against ``clone=False``, and with the
  flat copy's checks replaced by less than SPEC allows (a bare ``.copy()``; a test of each item's type
  with no size bound): how much of the copy's price is its checks;
- Python bytecodes executed on both threads per message, per round trip and per lifecycle, arkworker
  against the design limits (``floor-onmessage``, ``floor-request``): a count, which moves by a few
  percent between runs (how many loop passes a wake-up takes depends on timing), far less than a time.
"""

from __future__ import annotations

import asyncio
import cProfile
import math
import pstats
import random
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

from contenders import END, PARK, PARKED, Ark, ArkNoCopy, Floor, FloorOnmessage, FloorRequest, _ark_worker
from scenarios import PAYLOADS

import arkworker
from arkworker import _clone

QUICK = "--quick" in sys.argv[1:]
N = 20_000 if QUICK else 200_000  # messages per throughput block
REPS = 2 if QUICK else 7
ROUND_TRIPS = 2_000 if QUICK else 20_000  # profiled round trips
LIFECYCLES = 30 if QUICK else 300
COPY_REPS, COPY_N = (5, 100) if QUICK else (100, 400)  # interleaved blocks of round trips, per variant
# How many of each unit the bytecode count runs, and the design limit it is compared with.
COUNTED = (
    {"message": 20_000, "round trip": 300, "lifecycle": 100}
    if not QUICK
    else dict.fromkeys(("message", "round trip", "lifecycle"), 5)
)
LIMITS = {"message": FloorOnmessage, "round trip": FloorRequest, "lifecycle": FloorRequest}


async def throughput_apart() -> tuple[float, float]:
    """Median ns per message: the host posting (worker parked), the worker handling (host waiting)."""
    host, worker = [], []
    for _ in range(REPS):
        PARKED.clear()
        w = arkworker.ThreadWorker(_ark_worker, max_inbox=N + 10)
        replies = aiter(w.messages())
        await w.post_message(PARK)
        post = w.post_message
        start = time.perf_counter_ns()
        for i in range(N):
            await post(i)
        host.append((time.perf_counter_ns() - start) / N)
        await post(END)
        start = time.perf_counter_ns()
        PARKED.set()
        count = await anext(replies)
        worker.append((time.perf_counter_ns() - start) / N)
        assert count == N, count
        await w.terminate()
    return statistics.median(host), statistics.median(worker)


async def calls_per_roundtrip(contender: Any, n: int = ROUND_TRIPS) -> tuple[float, float]:
    """Function calls (C builtins included) per round trip on the host and on the worker thread.

    From Python 3.12 on, a process has one profiler, which sees every thread: the host's figure is then
    both threads' together, and the worker's is NaN.
    """
    await contender.start()
    for i in range(200):
        await contender.roundtrip(i)
    if sys.version_info >= (3, 12):
        profile = cProfile.Profile()
        profile.enable()
        for i in range(n):
            await contender.roundtrip(i)
        profile.disable()
        await contender.stop()
        return pstats.Stats(profile).total_calls / n, math.nan
    worker_profile = cProfile.Profile()
    loop = contender.worker._transport.loop if isinstance(contender, Ark) else contender.loop
    loop.call_soon_threadsafe(worker_profile.enable)
    await contender.roundtrip(0)
    host_profile = cProfile.Profile()
    host_profile.enable()
    for i in range(n):
        await contender.roundtrip(i)
    host_profile.disable()
    loop.call_soon_threadsafe(worker_profile.disable)
    await contender.roundtrip(0)
    await contender.stop()
    per = [pstats.Stats(p).total_calls / n for p in (host_profile, worker_profile)]
    return per[0], per[1]


async def construction(k: int = LIFECYCLES) -> tuple[float, float]:
    """Median µs of the host's ``ThreadWorker(...)`` and of the floor's ``start()``."""
    ark, floor = [], []
    for _ in range(k):
        start = time.perf_counter_ns()
        w = arkworker.ThreadWorker(_ark_worker)
        ark.append(time.perf_counter_ns() - start)
        await w.request(1)
        await w.terminate()
        f = Floor()
        start = time.perf_counter_ns()
        await f.start()
        floor.append(time.perf_counter_ns() - start)
        await f.roundtrip(1)
        await f.stop()
    return statistics.median(ark) / 1000, statistics.median(floor) / 1000


def _bare_copy(data: dict[Any, Any] | list[Any], max_size: int) -> object:
    """No check at all: what any copy costs. Less than SPEC allows (nested or huge items get through)."""
    return data.copy()


_FLAT_KINDS = frozenset({type(None), bool, int, float, str, bytes})


def _types_only(data: dict[Any, Any] | list[Any], max_size: int) -> object:
    """The type test of each key and item alone, with no size bound: less than SPEC needs."""
    for key in data if type(data) is dict else ():
        if type(key) not in _FLAT_KINDS:
            return None
    for item in data.values() if type(data) is dict else data:
        if type(item) not in _FLAT_KINDS:
            return None
    return data.copy()


async def copy_apart() -> dict[str, float]:
    """Each variant's round trip of the 3-key dict over ``clone=False``'s, a median of interleaved blocks."""
    shipped = _clone._flat_copy
    variants: dict[str, Callable[..., object] | None] = {
        "clone=False": None,
        "bare .copy(), no checks": _bare_copy,
        "type tests only, no size bound": _types_only,
        "as shipped": shipped,
    }
    by_ref, copying = ArkNoCopy(), Ark()
    await by_ref.start()
    await copying.start()
    medians: dict[str, list[float]] = {name: [] for name in variants}
    x = PAYLOADS["small dict (3 keys)"]()
    try:
        for rep in range(COPY_REPS + 1):  # the first pass warms up
            order = list(variants)
            random.shuffle(order)
            for name in order:
                flat_copy = variants[name]
                contender = by_ref if flat_copy is None else copying
                _clone._flat_copy = shipped if flat_copy is None else flat_copy  # type: ignore[assignment]
                samples = []
                for _ in range(COPY_N):
                    start = time.perf_counter_ns()
                    x = await contender.roundtrip(x)
                    samples.append(time.perf_counter_ns() - start)
                if rep:
                    medians[name].append(statistics.median(samples))
    finally:
        _clone._flat_copy = shipped
        await by_ref.stop()
        await copying.stop()
    base = medians["clone=False"]
    return {
        name: statistics.median(a / b for a, b in zip(v, base, strict=True)) for name, v in medians.items()
    }


class _Bytecodes:
    """Counts the bytecodes that every thread started after ``install()`` executes while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.count = 0

    def _trace(self, frame: FrameType, event: str, arg: object) -> Callable[..., Any]:
        frame.f_trace_opcodes = True
        return self._opcode

    def _opcode(self, frame: FrameType, event: str, arg: object) -> Callable[..., Any]:
        if self.on and event == "opcode":
            self.count += 1  # under the GIL: both threads add to it safely
        return self._opcode

    def install(self) -> None:
        sys.settrace(self._trace)
        threading.settrace(self._trace)

    def remove(self) -> None:
        sys.settrace(None)
        threading.settrace(None)


async def bytecodes_per(contender: type[Any], unit: str) -> float:
    """Python bytecodes run on both threads per ``unit``: a message (scenario B's stream), a round trip
    (A), or a whole lifecycle (C). The contender's own thread is started after the counter is installed."""
    n = COUNTED[unit]
    counter = _Bytecodes()
    counter.install()
    try:

        async def counted(step: Callable[[], Awaitable[Any]]) -> None:
            await step()  # once untimed: first calls differ
            counter.on = True
            await step()
            counter.on = False

        if unit == "lifecycle":

            async def lifecycles() -> None:
                for _ in range(n):
                    c = contender()
                    await c.start()
                    await c.roundtrip_once(1)
                    await c.stop()

            await counted(lifecycles)
            return counter.count / n
        c = contender()
        await c.start()
        try:
            if unit == "message":
                await counted(lambda: c.stream(n))
            else:

                async def round_trips() -> None:
                    for i in range(n):
                        await c.roundtrip(i)

                await counted(round_trips)
        finally:
            await c.stop()
        return counter.count / n
    finally:
        counter.remove()


async def main() -> None:
    host, worker = await throughput_apart()
    both = host + worker
    print(f"throughput, apart: host {host:.0f} ns per post, worker {worker:.0f} ns per message")
    print(f"  together {both:.0f} ns: at most {1e3 / both:.2f} M msg/s without handovers")
    ark_calls, floor_calls = await calls_per_roundtrip(Ark()), await calls_per_roundtrip(Floor())
    if math.isnan(ark_calls[1]):  # one profiler saw both threads
        both = f"arkworker {ark_calls[0]:.0f}, floor {floor_calls[0]:.0f}"
        print(f"calls per round trip (both threads): {both}")
    else:
        print(f"calls per round trip (host / worker): arkworker {ark_calls[0]:.0f} / {ark_calls[1]:.0f}, "
              f"floor {floor_calls[0]:.0f} / {floor_calls[1]:.0f}")  # fmt: skip
    ark_us, floor_us = await construction()
    print(f"start: ThreadWorker(...) {ark_us:.0f} µs, the floor's start() {floor_us:.0f} µs")
    ratios = await copy_apart()
    shown = (f"{name} {ratio:.3f}" for name, ratio in ratios.items() if name != "clone=False")
    print("copy of a 3-key dict, round trip over clone=False's: " + ", ".join(shown))
    for unit, limit in LIMITS.items():
        ark, least = await bytecodes_per(Ark, unit), await bytecodes_per(limit, unit)
        print(f"bytecodes per {unit} (both threads): arkworker {ark:.0f}, {limit.key} {least:.0f}")


if __name__ == "__main__":
    if unknown := set(sys.argv[1:]) - {"--quick"}:
        asked = unknown <= {"-h", "--help"}
        print(__doc__, file=sys.stdout if asked else sys.stderr)
        sys.exit(0 if asked else 2)
    asyncio.run(main())
