"""Global call objects (SPEC §2, §3): a worker calls host objects' methods synchronously."""

from __future__ import annotations

import asyncio
import threading

import pytest

import arkworker
from arkworker import (
    GlobalCallMethodNotCallableError,
    GlobalCallObjectNotRegisteredError,
    GlobalCallTimeoutError,
    ParameterError,
    SerializationError,
    ThreadWorker,
)


def caller(port):
    """Worker script: a request (instance, method, timeout_ms, args) makes that global call and returns its result.

    An exception of the call propagates, so ``request`` re-raises it on the host with its type.
    """

    def on_message(e):
        instance, method, timeout_ms, args = e.data
        return port.call_global_call_object_method(instance, method, timeout_ms, *args)

    port.onmessage = on_message


class Store:
    """A host object whose methods the worker calls."""

    def __init__(self, label: str = "store") -> None:
        self.label = label
        self.items = [1, 2, 3]
        self.calls: list[tuple] = []
        self.threads: list[threading.Thread] = []
        self.not_callable = 42

    def add(self, a, b):
        self.calls.append((a, b))
        self.threads.append(threading.current_thread())
        return a + b

    def get_items(self):
        return self.items

    def whoami(self):
        return self.label

    async def async_method(self):
        return 1

    def generator_method(self):
        yield 1

    async def async_generator_method(self):
        yield 1


class Boom(Exception):
    """A user exception raised by a host method."""


async def test_worker_gets_host_method_result():
    """The worker's call runs the method on the host loop's thread with the given args and returns its result."""
    store = Store()
    async with ThreadWorker(caller) as w:
        w.register_global_call_object("obj", store)
        assert await w.request(("obj", "add", 1000, (2, 3))) == 5
        assert await w.request(("obj", "add", 1000, (["a"], ["b"]))) == ["a", "b"]
    assert store.calls == [(2, 3), (["a"], ["b"])]
    assert store.threads == [threading.current_thread(), threading.current_thread()]


async def test_result_and_arguments_are_copies():
    """The worker gets a copy of the host method's result, and the host method gets copies of the arguments."""
    store = Store()
    received_args: list = []

    class Keeper:
        def keep(self, arg):
            received_args.append(arg)

    def setup(port):
        def on_message(e):
            mine = {"k": [1]}
            result = port.call_global_call_object_method("obj", "get_items", 1000)
            port.call_global_call_object_method("keeper", "keep", 1000, mine)
            return (
                result == store.items,
                result is store.items,
                received_args[0] is mine,
                received_args[0] == mine,
            )

        port.onmessage = on_message

    async with ThreadWorker(setup) as w:
        w.register_global_call_object("obj", store)
        w.register_global_call_object("keeper", Keeper())
        assert await w.request("go") == (True, False, False, True)


async def test_same_name_replaces():
    """Registering a second object under the same name replaces the first."""
    async with ThreadWorker(caller) as w:
        w.register_global_call_object("obj", Store("first"))
        assert await w.request(("obj", "whoami", 1000, ())) == "first"
        w.register_global_call_object("obj", Store("second"))
        assert await w.request(("obj", "whoami", 1000, ())) == "second"


async def test_unregister_by_name():
    """unregister_global_call_object(name) forgets only that name; unknown names are ignored."""
    async with ThreadWorker(caller) as w:
        w.register_global_call_object("a", Store("a"))
        w.register_global_call_object("b", Store("b"))
        w.unregister_global_call_object("a")
        w.unregister_global_call_object("never-registered")
        with pytest.raises(GlobalCallObjectNotRegisteredError):
            await w.request(("a", "whoami", 1000, ()))
        assert await w.request(("b", "whoami", 1000, ())) == "b"


async def test_unregister_all():
    """unregister_global_call_object() with no name forgets every registered object."""
    async with ThreadWorker(caller) as w:
        w.register_global_call_object("a", Store("a"))
        w.register_global_call_object("b", Store("b"))
        w.unregister_global_call_object()
        for name in ("a", "b"):
            with pytest.raises(GlobalCallObjectNotRegisteredError):
                await w.request((name, "whoami", 1000, ()))
        w.register_global_call_object("a", Store("again"))
        assert await w.request(("a", "whoami", 1000, ())) == "again"


async def test_unknown_instance_raises_not_registered_in_worker():
    """A call on an unknown instance name raises GlobalCallObjectNotRegisteredError (10200019) in the worker."""

    def setup(port):
        def on_message(e):
            try:
                port.call_global_call_object_method("nobody", "whoami", 1000)
            except GlobalCallObjectNotRegisteredError as exc:
                return ("caught", exc.code)
            return "no error"

        port.onmessage = on_message

    async with ThreadWorker(setup) as w:
        w.register_global_call_object("somebody", Store())
        assert await w.request("go") == ("caught", 10200019)


@pytest.mark.parametrize(
    "method", ["missing", "not_callable", "async_method", "generator_method", "async_generator_method"]
)
async def test_uncallable_methods_raise_not_callable(method):
    """Missing, non-callable, async and generator methods raise GlobalCallMethodNotCallableError (10200020)."""
    store = Store()

    def setup(port):
        def on_message(e):
            if e.data == "good":
                return port.call_global_call_object_method("obj", "add", 1000, 1, 1)
            try:
                port.call_global_call_object_method("obj", method, 1000)
            except GlobalCallMethodNotCallableError as exc:
                return ("caught", exc.code)
            return "no error"

        port.onmessage = on_message

    async with ThreadWorker(setup) as w:
        w.register_global_call_object("obj", store)
        assert await w.request("bad") == ("caught", 10200020)
        assert await w.request("good") == 2  # the worker and the registration still work


async def test_slow_host_method_times_out_in_worker():
    """A host method that answers later than timeout_ms raises GlobalCallTimeoutError (10200021, a TimeoutError)."""
    gate = threading.Event()
    outcome: dict = {}

    class Slow:
        def wait(self):
            outcome["released"] = gate.wait(1)  # blocks the host loop until the worker has given up
            return "late"

        def fast(self):
            return "fast"

    def setup(port):
        def on_message(e):
            if e.data == "fast":
                return port.call_global_call_object_method("slow", "fast", 1000)
            try:
                port.call_global_call_object_method("slow", "wait", 50)
            except GlobalCallTimeoutError as exc:
                return ("timeout", exc.code, isinstance(exc, TimeoutError))
            finally:
                gate.set()
            return "answered"

        port.onmessage = on_message

    async with ThreadWorker(setup) as w:
        w.register_global_call_object("slow", Slow())
        assert await w.request("slow") == ("timeout", 10200021, True)
        assert await w.request("fast") == "fast"  # a later call works
    assert outcome["released"] is True


async def test_timeout_error_reaches_host_requester_as_timeout_error():
    """A GlobalCallTimeoutError escaping the worker handler arrives at the host as both that class and TimeoutError."""
    gate = threading.Event()

    class Slow:
        def wait(self):
            gate.wait(1)

    def setup(port):
        def on_message(e):
            try:
                return port.call_global_call_object_method("slow", "wait", 50)
            finally:
                gate.set()

        port.onmessage = on_message

    async with ThreadWorker(setup) as w:
        w.register_global_call_object("slow", Slow())
        with pytest.raises(TimeoutError) as caught:
            await w.request("go")
    assert isinstance(caught.value, GlobalCallTimeoutError)
    assert caught.value.code == 10200021


@pytest.mark.parametrize("timeout_ms", [0, -1, 5001, 10**9, 5000, 1000])
async def test_zero_or_out_of_range_timeout_is_accepted(timeout_ms):
    """A timeout_ms of 0 or out of range (meaning 5000) is accepted, as are in-range values."""
    async with ThreadWorker(caller) as w:
        w.register_global_call_object("obj", Store())
        assert await w.request(("obj", "add", timeout_ms, (20, 22))) == 42


async def test_host_method_exception_is_reraised_in_worker_with_its_type():
    """An exception raised by the host method is re-raised in the worker with its type and arguments."""

    class Failing:
        def explode(self, what):
            raise Boom(f"exploded {what}")

        def lookup(self, what):
            return {}[what]

    def setup(port):
        def on_message(e):
            try:
                port.call_global_call_object_method("f", e.data, 1000, "now")
            except Boom as exc:
                return ("Boom", str(exc))
            except KeyError as exc:
                return ("KeyError", exc.args)
            return "no error"

        port.onmessage = on_message

    async with ThreadWorker(setup) as w:
        w.register_global_call_object("f", Failing())
        assert await w.request("explode") == ("Boom", "exploded now")
        assert await w.request("lookup") == ("KeyError", ("now",))


async def test_host_attribute_that_raises_is_reraised_in_worker_at_once():
    """A host attribute whose lookup raises (a failing property) is re-raised in the worker at once, not
    left to the call's timeout."""

    class Guarded:
        @property
        def secret(self):
            raise Boom("not readable")

    async with ThreadWorker(caller) as w:
        w.register_global_call_object("g", Guarded())
        with pytest.raises(Boom, match="not readable"):
            await w.request(("g", "secret", 5000, ()), timeout=2)


async def test_host_method_exception_does_not_end_worker_or_set_exit_code():
    """A host method's exception caught in the worker leaves it running and its exit code 0."""

    class Failing:
        def explode(self):
            raise Boom("x")

    def setup(port):
        def on_message(e):
            try:
                port.call_global_call_object_method("f", "explode", 1000)
            except Boom:
                return "caught"
            return "no error"

        port.onmessage = on_message

    w = ThreadWorker(setup)
    w.register_global_call_object("f", Failing())
    assert await w.request(1) == "caught"
    assert await w.request(2) == "caught"
    assert await w.terminate() == 0


@pytest.mark.parametrize(
    "args",
    [
        (123, "add", 1000),
        ("obj", None, 1000),
        ("obj", "add", "1000"),
        ("obj", "add", None),
        ("obj", "add", True),
    ],
    ids=["instance-int", "method-none", "timeout-str", "timeout-none", "timeout-bool"],
)
async def test_wrong_argument_types_raise_parameter_error(args):
    """Wrong argument types to call_global_call_object_method raise ParameterError (401) in the worker."""
    store = Store()

    def setup(port):
        def on_message(e):
            try:
                port.call_global_call_object_method(*args, 1, 2)
            except ParameterError as exc:
                return ("caught", exc.code)
            return "no error"

        port.onmessage = on_message

    async with ThreadWorker(setup) as w:
        w.register_global_call_object("obj", store)
        assert await w.request("go") == ("caught", 401)
    assert store.calls == []


async def test_host_registration_argument_types():
    """register/unregister_global_call_object with a non-str name raise ParameterError on the host."""
    async with ThreadWorker(caller) as w:
        with pytest.raises(ParameterError):
            w.register_global_call_object(123, Store())
        with pytest.raises(ParameterError):
            w.unregister_global_call_object(5)
        w.register_global_call_object("obj", Store())
        assert await w.request(("obj", "add", 1000, (1, 2))) == 3


@pytest.mark.parametrize("direction", ["argument", "result"])
async def test_uncopyable_argument_or_result_raises_serialization_error(direction):
    """An argument or result that cannot be copied raises SerializationError (10200006) in the worker."""

    class Leaky:
        def lock(self):
            return threading.Lock()

        def take(self, arg):
            return "took"

    def setup(port):
        def on_message(e):
            try:
                if direction == "argument":
                    port.call_global_call_object_method("obj", "take", 1000, lambda: 0)
                else:
                    port.call_global_call_object_method("obj", "lock", 1000)
            except SerializationError as exc:
                return ("caught", exc.code)
            return "no error"

        port.onmessage = on_message

    async with ThreadWorker(setup) as w:
        w.register_global_call_object("obj", Leaky())
        assert await w.request("go") == ("caught", 10200006)


async def test_worker_port_proxy_makes_global_calls():
    """arkworker.worker_port.call_global_call_object_method works like the port passed to the script."""

    def setup(port):
        port.onmessage = lambda e: arkworker.worker_port.call_global_call_object_method(
            "obj", "add", 1000, 4, 5
        )

    async with ThreadWorker(setup) as w:
        w.register_global_call_object("obj", Store())
        assert await w.request("go") == 9


async def test_a_base_exception_from_the_host_method_is_raised_in_the_worker_not_timed_out():
    """A host method that raises a BaseException that is not an error answers the worker with it at once
    (SPEC: the host method's exception is re-raised in the worker), instead of leaving the worker to wait
    out its timeout."""

    class Abort(BaseException):
        pass

    class Host:
        def boom(self):
            raise Abort("from the host method")

    def script(port):
        def on_message(e):
            try:
                port.call_global_call_object_method("host", "boom", 5000)
            except BaseException as exc:
                return type(exc).__name__
            return "no exception"

        port.onmessage = on_message

    async with ThreadWorker(script) as w:
        w.register_global_call_object("host", Host())
        assert await asyncio.wait_for(w.request("go"), 3) == "Abort"
