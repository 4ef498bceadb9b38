"""A hypothesis state machine that drives many workers through random lifecycles and checks SPEC invariants.

The library is asyncio-native, so the machine owns one host loop (an ``asyncio.Runner``) and runs each rule
as a coroutine on it. Between rules the host loop is idle while the worker threads keep running, which is
exactly the situation of a real program between two awaits.

Every worker runs ``make_script``: it records each message it handles, in order, into a list shared with
the test, and reacts to the message's kind:

``msg``     post ``("echo", seq)`` back and answer ``("ok", seq)``
``raise``   raise ``Boom(seq)`` (as a post: a worker error; as a request: re-raised to the requester)
``close``   ``worker_port.close()``
``child``   start a nested worker (terminated with its parent)
``global``  ``call_global_call_object_method("host", "twice", ...)`` and answer its result
``wait``    tell the test it started; the async variant then waits until cancelled
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from arkworker import (
    SerializationError,
    ThreadWorker,
    WorkerNotRunningError,
    WorkerState,
)

TIMEOUT = 10.0  # seconds any single await may take before the step counts as a hang
MAX_SIZE = 4096  # max_message_size of every worker: small, so "oversize" is cheap
MAX_WORKERS = 5  # top-level workers per run (a deterministic bound: hypothesis needs stable preconditions)
_names = itertools.count(1)


class Boom(Exception):
    """What a worker raises on a ``raise`` message."""


class HostObject:
    """The global call object every worker can call synchronously."""

    def twice(self, x: int) -> int:
        return 2 * x


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def worker_threads() -> list[threading.Thread]:
    """Live threads of this machine's workers and their children."""
    return [t for t in threading.enumerate() if t.name.startswith("arkworker-sm")]


@dataclass
class Shared:
    """What a worker and the test share: the worker's handling log and its 'started' signals."""

    host_loop: asyncio.AbstractEventLoop
    name: str
    log: list[tuple[str, int]] = field(default_factory=list)  # appended in the worker thread only
    started: dict[int, asyncio.Future[None]] = field(default_factory=dict)  # futures of the host loop
    children: list[ThreadWorker] = field(default_factory=list)

    def notify_started(self, seq: int) -> None:
        future = self.started.get(seq)
        if future is not None:
            self.host_loop.call_soon_threadsafe(_set_if_pending, future)


def _set_if_pending(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def child_script(port: Any) -> None:
    """A nested worker: it answers requests and otherwise idles until its parent ends."""
    port.onmessage = lambda e: e.data


def make_script(shared: Shared, use_async: bool) -> Any:
    """The worker callable, with a sync or an async ``onmessage``."""

    def act(port: Any, kind: str, seq: int) -> object:
        if kind == "msg":
            port.post_message(("echo", seq))
            return ("ok", seq)
        if kind == "raise":
            raise Boom(seq)
        if kind == "close":
            port.close()
            return None
        if kind == "child":
            shared.children.append(ThreadWorker(child_script, name=f"{shared.name}-c{seq}"))
            return None
        if kind == "global":
            return ("global", port.call_global_call_object_method("host", "twice", 5000, seq))
        if kind in ("req", "wait"):
            return ("ok", seq)
        raise AssertionError(f"unknown kind {kind!r}")

    def script(port: Any) -> None:
        if use_async:

            async def on_message(e: Any) -> object:
                kind, seq = e.data
                shared.log.append((kind, seq))
                if kind == "wait":
                    shared.notify_started(seq)
                    await asyncio.Event().wait()  # until the host cancels the request
                await asyncio.sleep(0)  # let the loop run between recording and acting
                return act(port, kind, seq)

        else:

            def on_message(e: Any) -> object:
                kind, seq = e.data
                shared.log.append((kind, seq))
                if kind == "wait":
                    shared.notify_started(seq)
                return act(port, kind, seq)

        port.onmessage = on_message

    return script


@dataclass
class Model:
    """The test's view of one top-level worker."""

    name: str
    handle: ThreadWorker
    shared: Shared
    use_async: bool
    errors_mode: str  # "onallerrors", "onerror" or "none" (unhandled: goes to the loop exception handler)
    accepted: list[tuple[str, int, str]] = field(default_factory=list)  # (post|request, kind, seq)
    cancelled: set[int] = field(default_factory=set)
    outcomes: dict[int, object] = field(default_factory=dict)  # request seq -> value or exception
    host_terminated: bool = False
    echoes: list[int] = field(default_factory=list)
    error_events: list[Any] = field(default_factory=list)
    message_errors: int = 0
    exit_calls: list[int] = field(default_factory=list)
    early_dispatch: bool = False  # something was dispatched while the host still saw STARTING
    last_state: WorkerState = WorkerState.STARTING
    verified: bool = False

    def __repr__(self) -> str:
        return f"<{self.name} {'async' if self.use_async else 'sync'} {self.errors_mode}>"


class WorkerMachine(RuleBasedStateMachine):
    """Random interleavings of create / post / request / cancel / error / terminate / close."""

    workers = Bundle("workers")

    def __init__(self) -> None:
        super().__init__()
        self.fds_before = open_fds()
        self.runner = asyncio.Runner()
        self.loop = self.runner.get_loop()
        self.loop.set_exception_handler(self._loop_exception)
        self.contexts: list[dict[str, Any]] = []
        self.models: list[Model] = []
        self.seq = itertools.count(1)

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.contexts.append(context)

    def run(self, coro: Any) -> Any:
        return self.runner.run(coro)

    # -- rules --------------------------------------------------------------------------------------

    @initialize(
        target=workers,
        use_async=st.booleans(),
        errors_mode=st.sampled_from(["onallerrors", "onerror", "none"]),
    )
    def first_worker(self, use_async: bool, errors_mode: str) -> Model:
        return self._create(use_async, errors_mode, 1024)

    @precondition(lambda self: len(self.models) < MAX_WORKERS)
    @rule(
        target=workers,
        use_async=st.booleans(),
        errors_mode=st.sampled_from(["onallerrors", "onerror", "none"]),
        max_inbox=st.sampled_from([2, 1024]),
    )
    def create(self, use_async: bool, errors_mode: str, max_inbox: int) -> Model:
        return self._create(use_async, errors_mode, max_inbox)

    def _create(self, use_async: bool, errors_mode: str, max_inbox: int) -> Model:
        name = f"sm{next(_names)}"
        shared = Shared(self.loop, name)

        async def go() -> Model:
            handle = ThreadWorker(
                make_script(shared, use_async),
                name=name,
                max_inbox=max_inbox,
                max_message_size=MAX_SIZE,
            )
            model = Model(name, handle, shared, use_async, errors_mode)

            def on_message(e: Any) -> None:
                if handle.state < WorkerState.RUNNING:
                    model.early_dispatch = True
                tag, seq = e.data
                assert tag == "echo"
                model.echoes.append(seq)

            handle.onmessage = on_message
            handle.onmessageerror = lambda e: setattr(model, "message_errors", model.message_errors + 1)
            handle.onexit = model.exit_calls.append
            if errors_mode == "onallerrors":
                handle.onallerrors = model.error_events.append
            elif errors_mode == "onerror":
                handle.onerror = model.error_events.append
            handle.register_global_call_object("host", HostObject())
            # SPEC: a post right after construction never raises WorkerNotRunningError.
            seq = next(self.seq)
            await asyncio.wait_for(handle.post_message(("msg", seq)), TIMEOUT)
            model.accepted.append(("post", "msg", seq))
            return model

        model = self.run(go())
        self.models.append(model)
        return model

    def _post(self, m: Model, kind: str) -> None:
        seq = next(self.seq)

        async def go() -> None:
            try:
                awaitable = m.handle.post_message((kind, seq))
            except WorkerNotRunningError:
                assert m.handle.state >= WorkerState.TERMINATING, "refused a post while running"
                return
            assert not m.host_terminated, "a post after terminate() was accepted"
            m.accepted.append(("post", kind, seq))
            try:
                await asyncio.wait_for(awaitable, TIMEOUT)  # backpressure: settles or fails, never hangs
            except WorkerNotRunningError:
                assert m.handle.state is WorkerState.TERMINATED

        self.run(go())

    @rule(m=workers, kind=st.sampled_from(["msg", "msg", "msg", "raise", "child"]))
    def post(self, m: Model, kind: str) -> None:
        self._post(m, kind)

    @rule(m=workers)
    def close_from_inside(self, m: Model) -> None:
        self._post(m, "close")

    @rule(m=workers, oversize=st.booleans())
    def post_bad(self, m: Model, oversize: bool) -> None:
        data: object = "x" * (MAX_SIZE + 100) if oversize else (lambda: None)

        async def go() -> None:
            before = (m.message_errors, m.handle.statistics().messages_sent)
            try:
                m.handle.post_message(data)
            except WorkerNotRunningError:
                assert m.handle.state >= WorkerState.TERMINATING
                return
            except SerializationError as exc:
                code = exc.code
            else:
                raise AssertionError("an uncopyable or oversize message was accepted")
            assert code == 10200006
            assert m.message_errors == before[0] + 1, "onmessageerror did not fire before the raise"
            assert m.handle.statistics().messages_sent == before[1], "a refused message counted as sent"

        self.run(go())

    @rule(m=workers, kind=st.sampled_from(["msg", "req", "raise", "global"]))
    def request(self, m: Model, kind: str) -> None:
        seq = next(self.seq)

        async def go() -> None:
            before = m.handle.statistics().requests
            try:
                outcome: object = await asyncio.wait_for(m.handle.request((kind, seq)), TIMEOUT)
            except (Boom, WorkerNotRunningError) as exc:
                outcome = exc
            if m.handle.statistics().requests == before:
                assert isinstance(outcome, WorkerNotRunningError), outcome
                assert m.handle.state >= WorkerState.TERMINATING, "refused a request while running"
                return
            assert not m.host_terminated, "a request after terminate() was accepted"
            m.accepted.append(("request", kind, seq))
            m.outcomes[seq] = outcome
            if isinstance(outcome, WorkerNotRunningError):
                return
            if kind == "raise":
                assert isinstance(outcome, Boom), outcome
                assert outcome.args == (seq,)
                assert outcome.__traceback__ is not None  # the worker's traceback is attached
            elif kind == "global":
                assert outcome == ("global", 2 * seq)
            else:
                assert outcome == ("ok", seq)

        self.run(go())

    @rule(m=workers, after_start=st.booleans(), yields=st.integers(0, 3))
    def request_then_cancel(self, m: Model, after_start: bool, yields: int) -> None:
        seq = next(self.seq)

        async def go() -> None:
            before = m.handle.statistics().requests
            started = self.loop.create_future()
            m.shared.started[seq] = started
            try:
                task = asyncio.ensure_future(m.handle.request(("wait", seq)))  # sent at once
            except WorkerNotRunningError:
                assert m.handle.statistics().requests == before
                return  # refused: the worker is terminating
            if after_start:
                done, _ = await asyncio.wait({task, started}, timeout=TIMEOUT, return_when="FIRST_COMPLETED")
                assert done, "the request neither started nor settled"
            else:
                for _ in range(yields):  # explore cancelling at different points, not a synchronisation
                    await asyncio.sleep(0)
            task.cancel()
            try:
                outcome: object = await asyncio.wait_for(task, TIMEOUT)
            except (asyncio.CancelledError, WorkerNotRunningError) as exc:
                outcome = exc
            started.cancel()
            assert m.handle.statistics().requests == before + 1
            m.accepted.append(("request", "wait", seq))
            m.cancelled.add(seq)
            m.outcomes[seq] = outcome
            assert isinstance(outcome, (asyncio.CancelledError, WorkerNotRunningError)) or outcome == (
                "ok",
                seq,
            ), outcome

        self.run(go())

    @rule(m=workers)
    def terminate(self, m: Model) -> None:
        async def go() -> None:
            m.host_terminated = True
            m.handle.terminate()  # without await first: repeated calls are harmless
            code = await asyncio.wait_for(m.handle.terminate(), TIMEOUT)
            assert code == m.handle.exit_code
            assert m.handle.state is WorkerState.TERMINATED
            assert await asyncio.wait_for(m.handle.wait(), TIMEOUT) == code

        self.run(go())

    # -- invariants ---------------------------------------------------------------------------------

    @invariant()
    def states_are_monotonic(self) -> None:
        for m in getattr(self, "models", []):
            state = m.handle.state
            assert state >= m.last_state, f"{m.name}: state went back from {m.last_state} to {state}"
            m.last_state = state
            assert not m.early_dispatch, f"{m.name}: a message was dispatched before RUNNING"

    @invariant()
    def exited_workers_are_consistent(self) -> None:
        for m in getattr(self, "models", []):
            if m.handle.exit_code is not None and not m.verified:
                self._verify(m)

    def _verify(self, m: Model) -> None:
        m.verified = True
        h = m.handle
        stats = h.statistics()
        assert h.state is WorkerState.TERMINATED
        alive = [t.name for t in worker_threads() if t.name.startswith(f"arkworker-{m.name}")]
        assert not alive, f"{m.name} exited but its (or its children's) threads live: {alive}"
        assert m.exit_calls == [h.exit_code], f"onexit calls: {m.exit_calls}"

        log = list(m.shared.log)
        logged = [seq for _, seq in log]
        assert logged == sorted(set(logged)), f"{m.name}: not handled exactly once in order: {log}"
        kinds = {seq: (how, kind) for how, kind, seq in m.accepted}
        assert set(logged) <= set(kinds), f"{m.name}: handled something never accepted: {log}"
        assert all(kinds[seq][1] == kind for kind, seq in log), f"{m.name}: handled the wrong data: {log}"
        logged_set = set(logged)
        missing = [seq for _, _, seq in m.accepted if seq not in logged_set]
        missing_not_cancelled = [seq for seq in missing if seq not in m.cancelled]

        close_seqs = [seq for kind, seq in log if kind == "close"]
        if close_seqs:
            assert log[-1][0] == "close", f"{m.name}: handled messages after close(): {log}"
            assert all(seq > close_seqs[0] for seq in missing_not_cancelled), (
                f"{m.name}: lost messages posted before close(): {missing_not_cancelled}"
            )
            assert len(missing_not_cancelled) <= stats.discarded <= len(missing), (
                f"{m.name}: discarded={stats.discarded}, unhandled={missing}, cancelled={m.cancelled}"
            )
        else:
            assert not missing_not_cancelled, f"{m.name}: accepted but never handled: {missing_not_cancelled}"
            assert stats.discarded == 0, f"{m.name}: discarded={stats.discarded} without close()"

        # Requests: a handled (not cancelled) request was answered; an unhandled one failed WorkerNotRunning.
        for how, _kind, seq in m.accepted:
            if how != "request" or seq in m.cancelled:
                continue
            outcome = m.outcomes[seq]
            if seq in logged_set:
                assert not isinstance(outcome, WorkerNotRunningError), (
                    f"{m.name}: handled {seq} but no answer"
                )
            else:
                assert isinstance(outcome, WorkerNotRunningError), (
                    f"{m.name}: {seq} unhandled yet {outcome!r}"
                )

        worker_errors = sum(
            1 for how, kind, seq in m.accepted if how == "post" and kind == "raise" and seq in logged_set
        )
        assert h.exit_code == (1 if worker_errors else 0), (
            f"{m.name}: exit {h.exit_code}, errors {worker_errors}"
        )
        assert stats.errors == worker_errors, (
            f"{m.name}: statistics().errors={stats.errors}, expected {worker_errors}"
        )
        mine = [c for c in self.contexts if c.get("worker") is h]
        if m.errors_mode == "none":
            assert len(mine) == worker_errors, (
                f"{m.name}: {len(mine)} reports to the loop, {worker_errors} errors"
            )
        else:
            assert not mine, f"{m.name}: handled errors also went to the loop: {mine}"
            assert len(m.error_events) == worker_errors
            assert all(isinstance(e.error, Boom) for e in m.error_events)

        echoed = [seq for how, kind, seq in m.accepted if kind == "msg" and seq in logged_set]
        assert m.echoes == echoed, f"{m.name}: worker posts delivered {m.echoes}, expected {echoed}"
        assert stats.messages_sent == len(m.accepted)

    def teardown(self) -> None:
        try:
            if hasattr(self, "runner"):

                async def finish() -> list[asyncio.Task[Any]]:
                    exits = [m.handle.terminate() for m in self.models]
                    if exits:
                        _, pending = await asyncio.wait(exits, timeout=TIMEOUT)
                        assert not pending, "a worker did not exit within the timeout"
                    me = asyncio.current_task()
                    return [t for t in asyncio.all_tasks() if t is not me]

                leftover = self.run(finish())
                assert not leftover, f"tasks left on the host loop: {leftover}"
                for m in self.models:
                    if not m.verified:
                        self._verify(m)
                unexpected = [c for c in self.contexts if "worker" not in c]
                assert not unexpected, f"unexpected loop exception handler calls: {unexpected}"
        finally:
            if hasattr(self, "runner"):
                self.runner.close()
        assert not worker_threads(), f"threads alive after every worker ended: {worker_threads()}"
        assert open_fds() == self.fds_before, f"fds: {self.fds_before} before, {open_fds()} after"


WorkerMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=25, deadline=None)


class TestWorkerMachine(WorkerMachine.TestCase):  # type: ignore[misc,valid-type]
    """Random worker lifecycles keep every SPEC invariant: delivery, settlement, exit codes, no leaks."""
