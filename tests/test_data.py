"""Data crossing threads (SPEC §4): copies, classes, clone=False, uncopyable messages, transfer, sendables."""

from __future__ import annotations

import array
import asyncio
import contextlib
import ctypes
import functools
import gc
import pickle
import random
import threading
from collections.abc import Iterator

import pytest
from support import answer

import arkworker
from arkworker import ErrorEvent, ParameterError, SerializationError, ThreadWorker


class Point:
    """A plain class of the test module: instances must cross with their class intact."""

    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y

    def norm2(self) -> int:
        return self.x * self.x + self.y * self.y


@arkworker.sendable
class Counter:
    """A sendable: copied by post_message, shared by post_message_with_shared_sendable."""

    def __init__(self) -> None:
        self.value = 0


def recorder(received: list, on_data=None):
    """A worker script that records every received object (in the worker thread) and answers "flush"."""

    def setup(port):
        def on_message(e):
            if isinstance(e.data, str) and e.data == "flush":
                return "flushed"
            received.append(e.data)
            if on_data is not None:
                return on_data(e.data)
            return None

        port.onmessage = on_message

    return setup


@contextlib.contextmanager
def captured_loop_exceptions() -> Iterator[list[dict]]:
    """Capture what reaches the running loop's exception handler during the block."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    contexts: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))
    try:
        yield contexts
    finally:
        loop.set_exception_handler(previous)


async def next_message(w: ThreadWorker):
    """The next message the worker posted that no handler took."""
    return await asyncio.wait_for(anext(aiter(w.messages())), timeout=5)


# -- copy isolation -------------------------------------------------------------------------------------


async def test_worker_mutating_received_dict_leaves_host_object_unchanged():
    """A worker that mutates a received dict/list never changes the host's original object."""

    def mutate(data):
        data["items"].append(99)
        data["new"] = True
        return data

    received: list = []
    original = {"items": [1, 2], "nested": {"k": [3]}}
    async with ThreadWorker(recorder(received, mutate)) as w:
        mutated = await w.request(original)
    assert mutated == {"items": [1, 2, 99], "nested": {"k": [3]}, "new": True}
    assert original == {"items": [1, 2], "nested": {"k": [3]}}
    assert received[0] is not original


async def test_host_mutating_after_post_does_not_reach_worker():
    """The worker receives the message as it was when posted, whatever the host does to it afterwards."""
    received: list = []
    data = [1, {"a": [2]}]
    async with ThreadWorker(recorder(received)) as w:
        w.post_message(data)
        data.append(3)
        data[1]["a"].append(4)
        await w.request("flush")
    assert received == [[1, {"a": [2]}]]


async def test_host_mutating_received_object_leaves_worker_object_unchanged():
    """Objects the worker sends are copies: the host mutating them never changes the worker's own object."""
    state = {"items": [1, 2]}

    def setup(port):
        def on_message(e):
            if e.data == "get":
                return state
            port.post_message(state)
            state["items"].append("after-post")  # must not reach the host's copy
            return None

        port.onmessage = on_message

    async with ThreadWorker(setup) as w:
        got = await w.request("get")
        assert got == {"items": [1, 2]}
        assert got is not state
        got["items"].append(3)
        assert await w.request("get") == {"items": [1, 2]}
        assert state == {"items": [1, 2]}
        w.post_message("post")
        posted = await next_message(w)
    assert posted == {"items": [1, 2]}
    assert state == {"items": [1, 2, "after-post"]}


FLAT = {
    "dict": lambda: {"id": 42, "op": "get", "key": "user:42", "ok": True, "ratio": 0.5, "none": None},
    "list": lambda: [1, "two", b"three", 4.0, None, False],
    "dict-with-int-keys": lambda: {1: "a", 2: "b"},
}


@pytest.mark.parametrize("make", FLAT.values(), ids=FLAT.keys())
async def test_a_small_flat_message_is_a_copy_both_ways(make):
    """A small dict or list of scalars and strings (copied without pickle) is still a copy each way."""
    kept: list = []

    def setup(port):
        def on_message(e):
            kept.append(e.data)
            return e.data

        port.onmessage = on_message

    original = make()
    async with ThreadWorker(setup) as w:
        answer = await w.request(original)
        assert answer == original == make()
        assert answer is not original
        assert kept[0] is not original
        assert answer is not kept[0]
        answer.clear()  # the host's copy is its own
        kept[0].clear()  # and so is the worker's
    assert original == make()


class Tagged(dict):
    """A dict subclass: not a flat message, so it is pickled and keeps its class."""


async def test_a_dict_subclass_or_nested_dict_is_still_pickled_whole():
    """Only exact dicts and lists of scalars skip pickle: a subclass keeps its class, a nested list is copied."""
    nested = {"items": [1, 2]}
    async with ThreadWorker(answer) as w:
        tagged = await w.request(Tagged(a=1))
        copy = await w.request(nested)
    assert type(tagged) is Tagged
    assert tagged == {"a": 1}
    assert copy == nested
    assert copy["items"] is not nested["items"]


# -- classes ------------------------------------------------------------------------------------------


async def test_instance_of_test_module_class_keeps_its_class():
    """An instance of a class defined in the host's module arrives in the worker and back with its class."""

    def inspect_point(p):
        return (type(p) is Point, p.norm2(), p)

    p = Point(3, 4)
    async with ThreadWorker(recorder([], inspect_point)) as w:
        is_point_in_worker, norm2_in_worker, back = await w.request(p)
    assert is_point_in_worker is True
    assert norm2_in_worker == 25
    assert type(back) is Point
    assert back is not p
    assert (back.x, back.y, back.norm2()) == (3, 4, 25)


async def test_instance_of_class_defined_in_worker_script_reaches_host(scripts):
    """An instance of a class defined inside a worker script file reaches the host intact, methods included."""
    async with ThreadWorker(scripts / "data_reading.py") as w:
        reading = await w.request("make")
        assert type(reading).__name__ == "Reading"
        assert reading.sensor == "t1"
        assert reading.mean() == 2.0
        cls, other = await w.request("pair")
        assert type(other) is cls is type(reading)  # classes travel by reference
        assert other.mean() == 4.0
        w.post_message("post")
        posted = await next_message(w)
        assert type(posted) is cls
        assert posted.mean() == 6.0
        # Sent back, the worker recognises an instance of its own class.
        assert await w.request(("is-reading", reading)) == 2.0


async def test_instances_of_classes_defined_inside_functions_keep_their_class_both_ways():
    """Classes travel by reference: an instance of a class defined inside a test, or inside a callable
    worker script, crosses with its class, though pickle cannot name such a class."""

    class Local:
        def __init__(self, x):
            self.x = x

    def script(port):
        class Made:
            def __init__(self, x):
                self.x = x

        def on_message(e):
            if e.data == "make":
                return Made(7)
            return (type(e.data) is Local, e.data)

        port.onmessage = on_message

    async with ThreadWorker(script) as w:
        sent = Local(3)
        is_local_in_worker, back = await w.request(sent)
        assert is_local_in_worker is True
        assert type(back) is Local
        assert back is not sent
        assert back.x == 3
        made = await w.request("make")
        assert type(made).__name__ == "Made"
        assert made.x == 7
        assert (await w.request(made))[1].x == 7  # sent back: still a copy of the same class


async def test_an_instance_of_a_script_class_still_crosses_after_that_worker_exited(scripts):
    """An instance of a class defined in a script file can be sent on to another worker after the worker
    that defined it exited (and its module left sys.modules)."""
    async with ThreadWorker(scripts / "data_reading.py") as w:
        reading = await w.request("make")
    gc.collect()
    async with ThreadWorker(answer) as other:
        copy = await other.request(reading)
    assert type(copy) is type(reading)
    assert copy is not reading
    assert copy.mean() == 2.0


async def test_a_copy_made_before_the_defining_worker_exited_is_rebuilt_after_it(scripts):
    """Copies of instances of a script file's classes, a nested one too, sent on to another worker while
    the defining worker runs and rebuilt there after that worker exited (and a garbage collection ran),
    arrive intact: a copy keeps the script's module it names until it is rebuilt."""
    gate = threading.Event()

    def held(port):
        def on_message(e):
            if e.data == "hold":
                gate.wait(10)
                return None
            return e.data

        port.onmessage = on_message

    maker = ThreadWorker(scripts / "data_reading.py")
    async with ThreadWorker(held) as other:
        async with asyncio.timeout(10):
            reading, unit = await maker.request("make"), await maker.request("unit")
            module = type(reading).__module__  # its classes are not kept here, only their names
            other.post_message("hold")
            # Copied now, naming the classes, and dropped here: only the copies in flight hold them.
            answers = [asyncio.ensure_future(other.request(x)) for x in (reading, unit)]
            del reading, unit
            assert await maker.terminate() == 0
            gc.collect()
            gate.set()
            copies = await asyncio.gather(*answers)
    assert [(type(copy).__module__, type(copy).__qualname__) for copy in copies] == [
        (module, "Reading"),
        (module, "Reading.Unit"),
    ]
    assert (copies[0].mean(), copies[1].symbol) == (2.0, "°C")
    assert other.exit_code == 0


@pytest.mark.parametrize(
    "value",
    [
        0,
        -5,
        2**100,
        1.5,
        "héllo",
        "",
        b"\x00\xff",
        None,
        True,
        (1, "a", b"b"),
        ((1, 2), ("x", (None,))),
        frozenset({1, "a"}),
    ],
    ids=repr,
)
async def test_immutable_builtins_arrive_equal(value):
    """Immutable builtins and tuples/frozensets of them arrive equal and of the same type."""
    async with ThreadWorker(answer) as w:
        out = await w.request(value)
    assert out == value
    assert type(out) is type(value)


async def test_clone_false_passes_the_very_same_object():
    """With clone=False both directions pass the very same object, not a copy."""
    received: list = []
    owned = {"worker": ["owned"]}

    def setup(port):
        def on_message(e):
            if e.data == "send-owned":
                port.post_message(owned)
                return None
            received.append(e.data)
            return e.data

        port.onmessage = on_message

    data = {"host": [1, 2]}
    async with ThreadWorker(setup, clone=False) as w:
        back = await w.request(data)
        w.post_message("send-owned")
        got = await next_message(w)
    assert received[0] is data
    assert back is data
    assert got is owned


# -- uncopyable messages --------------------------------------------------------------------------------


def _generator():
    yield 1


UNCOPYABLE = {
    "lambda": lambda: lambda: 42,
    "lock": threading.Lock,
    "generator": _generator,
    "nested-lambda": lambda: {"ok": [1], "bad": lambda: 0},
    # SPEC: functions cannot be copied, even those pickle could name.
    "module-function": lambda: _generator,
    "builtin": lambda: len,
    "bound-method": lambda: Point(1, 2).norm2,
    "partial": lambda: functools.partial(int, base=2),
}


@pytest.mark.parametrize("make", UNCOPYABLE.values(), ids=UNCOPYABLE.keys())
async def test_uncopyable_message_raises_after_onmessageerror_and_worker_keeps_running(make):
    """An uncopyable message raises SerializationError after onmessageerror got its ErrorEvent; the worker lives."""
    events: list = []
    listened: list = []

    async with ThreadWorker(answer) as w:

        def on_message_error(event):
            events.append(event)

        w.onmessageerror = on_message_error
        w.on("messageerror", listened.append)
        with pytest.raises(SerializationError) as caught:
            w.post_message(make())
        assert caught.value.code == 10200006
        assert len(events) == 1
        event = events[0]
        assert isinstance(event, ErrorEvent)
        assert event.error is caught.value
        assert listened == [event]
        assert await w.request("still alive") == "still alive"


async def test_a_worker_handle_or_port_cannot_be_copied_and_the_error_says_so():
    """A ThreadWorker handle, a port and the worker_port stand-in are refused by name, not with whatever
    pickle meets inside them first."""
    from arkworker import worker_port  # bound here, on the host: the stand-in

    def posts_its_port(port):
        def on_message(e):
            refused = []
            for what in (port, worker_port):
                try:
                    port.post_message({"port": what})
                except SerializationError as exc:
                    refused.append(str(exc))
            return refused

        port.onmessage = on_message

    async with ThreadWorker(posts_its_port) as w:
        with pytest.raises(SerializationError, match="a ThreadWorker cannot be copied"):
            w.post_message([w])
        assert await w.request(None) == [
            "cannot copy dict: TypeError: a worker's port cannot be copied: it belongs to its worker's thread",
            "cannot copy dict: TypeError: worker_port cannot be copied: it is the port of the worker that uses it",
        ]


async def test_uncopyable_message_with_shared_sendable_raises_too():
    """post_message_with_shared_sendable raises SerializationError for an uncopyable message as well."""
    events: list = []
    async with ThreadWorker(answer) as w:
        w.onmessageerror = events.append
        with pytest.raises(SerializationError):
            w.post_message_with_shared_sendable({"c": Counter(), "f": lambda: 0})
        assert len(events) == 1
        assert isinstance(events[0].error, SerializationError)
        assert await w.request(1) == 1


async def test_raising_onmessageerror_goes_to_loop_handler_and_error_still_raised():
    """If onmessageerror raises, SerializationError is still raised and its exception reaches the loop handler."""
    boom = RuntimeError("onmessageerror failed")

    def bad_handler(event):
        raise boom

    with captured_loop_exceptions() as contexts:
        async with ThreadWorker(answer) as w:
            w.onmessageerror = bad_handler
            with pytest.raises(SerializationError):
                w.post_message(lambda: 0)
            assert await w.request("ok") == "ok"
    assert [c.get("exception") for c in contexts] == [boom]
    assert w.exit_code == 0


async def test_message_over_max_message_size_raises_serialization_error():
    """A message whose pickled size exceeds max_message_size raises SerializationError after onmessageerror."""
    events: list = []
    async with ThreadWorker(answer, max_message_size=1000) as w:
        w.onmessageerror = events.append
        with pytest.raises(SerializationError) as caught:
            w.post_message(list(range(1000)))
        assert len(events) == 1
        assert events[0].error is caught.value
        assert await w.request(list(range(10))) == list(range(10))  # small messages still pass


@pytest.mark.parametrize("big", [b"x" * 5000, "y" * 5000], ids=["bytes", "str"])
async def test_oversized_immutable_message_raises_serialization_error(big):
    """A large bytes or str message whose pickled size exceeds max_message_size is rejected as well."""
    events: list = []
    async with ThreadWorker(answer, max_message_size=1000) as w:
        w.onmessageerror = events.append
        with pytest.raises(SerializationError):
            w.post_message(big)
        assert len(events) == 1
        assert await w.request("ok") == "ok"


@pytest.mark.parametrize("big", [10**3000, -(10**3000)], ids=["positive", "negative"])
async def test_oversized_int_raises_serialization_error_and_small_ints_pass(big):
    """An int is small enough to pass unmeasured only below 2**63; a huge one is measured and refused."""
    async with ThreadWorker(answer, max_message_size=1000) as w:
        with pytest.raises(SerializationError):
            w.post_message(big)
        with pytest.raises(SerializationError):
            await w.request(big)
        assert await w.request(2**63 - 1) == 2**63 - 1
        assert await w.request(10**200) == 10**200  # large, but under 1000 bytes when pickled


@pytest.mark.parametrize(
    "data",
    [
        b"x" * 300,
        "y" * 300,
        "é" * 100,
        2**3000,
        -(2**3000),
        1 + 2j,
        (b"x" * 300, "y"),
        frozenset({b"z" * 300}),
        {"text": "é" * 100, "n": 1},
        ["y" * 300, 2**70],
        {"blob": b"x" * 300, "big": -(2**3000)},
        # Strings of 64 KiB of 4-byte characters make pickle open new frames; ints of 2**62 take 10 bytes.
        [2**62, "\U0001f600" * 16384, 2**62, "\U0001f601" * 16384, 2**62, "\U0001f602" * 16384, 2**62, 2**62],
    ],
    ids=[
        *("bytes", "str", "str-2-byte", "int", "negative-int", "complex", "tuple", "frozenset"),
        *("flat-dict-2-byte-str", "flat-list-big-int", "flat-dict-huge-int", "flat-list-over-a-frame"),
    ],
)
async def test_max_message_size_is_exact_for_messages_not_pickled(data):
    """A message that would cross without a pickle (immutable, or a small flat dict or list, copied) passes at
    exactly its pickled size and is refused one byte below it."""
    size = len(pickle.dumps(data, protocol=5))
    async with ThreadWorker(answer, max_message_size=size - 1) as w:
        with pytest.raises(SerializationError):
            w.post_message(data)
    async with ThreadWorker(answer, max_message_size=size) as w:
        assert await w.request(data) == data


def random_flat(rng: random.Random) -> dict | list:
    """A small flat dict or list, the kind copied without pickle, with items whose pickled size is hardest to
    bound: strings of 1- to 4-byte characters and lone surrogates, some over 64 KiB, ints of 10 bytes."""

    def item() -> object:
        kind = rng.randrange(6)
        if kind < 2:  # four UTF-8 bytes a character, as many as the bound allows: its worst case
            return "\U0001f600" * rng.choice([rng.randrange(40), rng.randrange(16_300, 16_500)])
        if kind == 2:
            return "".join(rng.choice("aé€\U0001f600\ud800") for _ in range(rng.randrange(40)))
        if kind == 3:
            return bytes(rng.choice([rng.randrange(40), rng.randrange(65_000, 66_000)]))
        if kind == 4:  # 10 bytes pickled, as many as the bound allows
            return rng.choice([2**62, 2**63 - 1, -(2**63) + 1])
        return rng.choice([None, True, 1.5, 0, 255, 2**31])

    n = rng.randrange(9)
    if rng.random() < 0.5:
        return [item() for _ in range(n)]
    return {rng.randrange(1000): item() for _ in range(n)}


async def test_max_message_size_is_exact_for_random_flat_messages():
    """Random flat messages (seeded): each passes at exactly its pickled size and is refused one byte below."""
    rng = random.Random(1125)
    for _ in range(60):
        data = random_flat(rng)
        size = len(pickle.dumps(data, protocol=5))
        async with ThreadWorker(answer, max_message_size=size - 1) as w:
            with pytest.raises(SerializationError):
                w.post_message(data)
        async with ThreadWorker(answer, max_message_size=size) as w:
            await w.post_message(data)


async def test_tiny_max_message_size_measures_even_scalars():
    """With a max_message_size below 32 bytes, even a float is measured: 21 bytes pickled is refused."""
    async with ThreadWorker(answer, max_message_size=8) as w:
        with pytest.raises(SerializationError):
            w.post_message(1.5)
        assert await w.request(None) is None  # None pickles to 4 bytes


async def test_buffers_listed_in_transfer_but_not_in_the_message_take_nothing_off_its_size():
    """Only the buffers a message holds count nothing: listing others in transfer does not let a message
    over max_message_size through."""
    unused = [bytearray(1) for _ in range(1200)]
    async with ThreadWorker(answer, max_message_size=1000) as w:
        with pytest.raises(SerializationError, match="over the 1000-byte max_message_size"):
            w.post_message(["y" * 3000], transfer=unused)
        assert await w.request("still here") == "still here"


async def test_transferred_buffers_do_not_count_toward_max_message_size():
    """A buffer moved with transfer does not count toward max_message_size."""
    received: list = []
    buf = bytearray(10_000)
    async with ThreadWorker(recorder(received), max_message_size=1000) as w:
        w.post_message({"buf": buf}, transfer=[buf])
        await w.request("flush")
    assert received[0]["buf"] is buf


async def test_host_serialization_error_does_not_make_exit_code_one():
    """A SerializationError raised to a host caller leaves the exit code at 0."""
    w = ThreadWorker(answer)
    with pytest.raises(SerializationError):
        w.post_message(threading.Lock())
    assert await w.request(5) == 5
    assert await w.terminate() == 0
    assert w.exit_code == 0


async def test_worker_posting_uncopyable_gets_serialization_error_and_exit_code_one():
    """A worker posting an uncopyable message gets SerializationError after its own onmessageerror; exit code 1."""

    def setup(port):
        seen: list = []
        port.onmessageerror = seen.append

        def on_message(e):
            if e.data != "post-lambda":
                return "alive"
            try:
                port.post_message({"f": lambda: 0})
            except SerializationError as exc:
                event = seen[0] if seen else None
                return (
                    "raised",
                    exc.code,
                    len(seen),
                    isinstance(event, ErrorEvent),
                    event is not None and event.error is exc,
                )
            return "not raised"

        port.onmessage = on_message

    w = ThreadWorker(setup)
    try:
        assert await w.request("post-lambda") == ("raised", 10200006, 1, True, True)
        assert await w.request("again") == "alive"
    finally:
        code = await w.terminate()
    assert code == 1


# -- transfer -------------------------------------------------------------------------------------------


async def test_transferred_bytearray_is_the_same_memory():
    """A transferred bytearray reaches the worker without a copy: its writes show in the host's object."""

    def write(data):
        data["buf"][0:3] = b"abc"

    received: list = []
    buf = bytearray(8)
    async with ThreadWorker(recorder(received, write)) as w:
        w.post_message({"buf": buf, "n": 1}, transfer=[buf])
        await w.request("flush")
    assert received[0]["buf"] is buf
    assert bytes(buf[:3]) == b"abc"


async def test_message_that_is_its_transferred_buffer_arrives_as_that_buffer_both_ways():
    """post_message(buf, transfer=[buf]) hands over buf itself, host to worker and back."""
    seen: list = []

    def setup(port):
        def on_message(e):
            seen.append(e.data)
            e.data[0] = 7
            port.post_message(e.data, transfer=[e.data])

        port.onmessage = on_message

    buf = bytearray(4)
    async with ThreadWorker(setup) as w:
        w.post_message(buf, transfer=[buf])
        back = await next_message(w)
    assert seen[0] is buf
    assert back is buf
    assert buf[0] == 7


async def test_memoryviews_not_transferred_are_copied_with_their_format_and_shape():
    """A memoryview outside transfer (which pickle refuses) crosses as a view of a copy of its bytes, in its
    format and shape, writable if the original was; writes on either side stay on that side."""
    base = bytearray(b"abcd")
    grid = memoryview(array.array("i", range(6))).cast("B").cast("i", [2, 3])
    message = {"view": memoryview(base), "readonly": memoryview(b"xyz"), "grid": grid}
    received: list = []

    def write(data):
        data["view"][0] = ord("Z")

    async with ThreadWorker(recorder(received, write)) as w:
        w.post_message(message)
        await w.request("flush")
    got = received[0]
    assert (bytes(got["view"]), got["view"].readonly) == (b"Zbcd", False)
    assert base == bytearray(b"abcd")  # the sender's memory is untouched
    assert (bytes(got["readonly"]), got["readonly"].readonly) == (b"xyz", True)
    assert (got["grid"].format, got["grid"].shape, got["grid"].tolist()) == (
        "i",
        (2, 3),
        [[0, 1, 2], [3, 4, 5]],
    )
    assert message["view"].obj is base  # the sender's view is not released: it was copied, not moved


UNREBUILDABLE_VIEWS = {
    "explicit byte order": lambda: memoryview((ctypes.c_int32.__ctype_be__ * 2)()),  # a ctypes array: ">i"
    "2-D with an empty dimension": lambda: memoryview(pytest.importorskip("numpy").zeros((0, 3), dtype="i")),
}


@pytest.mark.parametrize("make_view", UNREBUILDABLE_VIEWS.values(), ids=UNREBUILDABLE_VIEWS.keys())
async def test_a_memoryview_that_cannot_be_rebuilt_is_refused_with_serialization_error(make_view):
    """A memoryview that a copy could not be rebuilt as (memoryview.cast takes native single-character
    formats, and one dimension if any is empty) raises SerializationError from the sender's call, not on
    the receiver; the worker keeps working."""
    view = make_view()
    async with ThreadWorker(answer) as w:
        with pytest.raises(SerializationError):
            w.post_message(view)
        assert await w.request("still here") == "still here"


async def test_transferred_memoryview_moves_and_is_released_on_sender():
    """A transferred memoryview is released on the sender and the worker's view writes the same memory."""

    def write(view):
        view[0] = 7

    base = bytearray(4)
    view = memoryview(base)
    async with ThreadWorker(recorder([], write)) as w:
        w.post_message(view, transfer=[view])
        with pytest.raises(ValueError):
            view[0]  # using a released view raises
        await w.request("flush")
    assert base[0] == 7


@pytest.mark.parametrize("clone", [True, False], ids=["clone", "clone=False"])
async def test_transferred_memoryview_inside_a_message_is_released_even_without_clone(clone):
    """A memoryview moved inside a larger message is released on the sender even with clone=False; the
    worker gets a working view of the same memory."""

    def write(message):
        message["view"][0] = 9

    base = bytearray(4)
    view = memoryview(base)
    async with ThreadWorker(recorder([], write), clone=clone) as w:
        w.post_message({"view": view}, transfer=[view])
        with pytest.raises(ValueError):
            view[0]
        await w.request("flush")
    assert base[0] == 9


async def test_transferred_array_is_the_same_memory():
    """A transferred array.array is shared, not copied: the worker's writes show in the host's array."""

    def write(arr):
        arr[0] = 100

    received: list = []
    arr = array.array("i", [1, 2, 3])
    async with ThreadWorker(recorder(received, write)) as w:
        w.post_message(arr, transfer=[arr])
        await w.request("flush")
    assert received[0] is arr
    assert arr.tolist() == [100, 2, 3]


async def test_transferred_numpy_array_is_the_same_memory():
    """A transferred NumPy array is shared, not copied: the worker's writes show in the host's array."""
    np = pytest.importorskip("numpy")

    def write(a):
        a[1] = 5.0

    arr = np.zeros(4)
    async with ThreadWorker(recorder([], write)) as w:
        w.post_message(arr, transfer=[arr])
        await w.request("flush")
    assert arr.tolist() == [0.0, 5.0, 0.0, 0.0]


async def test_worker_transfer_to_host_is_the_same_memory():
    """A buffer the worker transfers to the host is the worker's very object, not a copy."""
    owned = bytearray(b"worker")

    def setup(port):
        port.onmessage = lambda e: port.post_message(owned, transfer=[owned])

    async with ThreadWorker(setup) as w:
        w.post_message("go")
        got = await next_message(w)
    assert got is owned


@pytest.mark.parametrize(
    "items", [[object()], ["text"], [42], [[bytearray(1)]], [bytearray(1), None]], ids=repr
)
async def test_transfer_of_non_buffers_raises_parameter_error(items):
    """transfer items that are not buffers raise ParameterError (401) and the worker keeps working."""
    async with ThreadWorker(answer) as w:
        with pytest.raises(ParameterError) as caught:
            w.post_message(b"data", transfer=items)
        assert caught.value.code == 401
        assert await w.request("ok") == "ok"


async def test_worker_transfer_of_non_buffer_raises_parameter_error():
    """In the worker, a transfer item that is not a buffer raises ParameterError too."""

    def setup(port):
        def on_message(e):
            try:
                port.post_message("x", transfer=[object()])
            except ParameterError as exc:
                return exc.code
            return "not raised"

        port.onmessage = on_message

    async with ThreadWorker(setup) as w:
        assert await w.request("go") == 401


# -- sendables ------------------------------------------------------------------------------------------


async def test_post_message_copies_sendable():
    """post_message copies a @sendable object: the worker's mutations never reach the host's object."""

    def bump(c):
        c.value += 10

    received: list = []
    counter = Counter()
    async with ThreadWorker(recorder(received, bump)) as w:
        w.post_message(counter)
        await w.request("flush")
    assert type(received[0]) is Counter
    assert received[0] is not counter
    assert received[0].value == 10
    assert counter.value == 0


async def test_shared_sendable_is_the_same_object_both_ways():
    """post_message_with_shared_sendable passes a @sendable by reference; the rest is still copied."""

    def bump(data):
        data["counter"].value += 10
        data["plain"].append("worker")

    received: list = []
    counter = Counter()
    plain: list = []
    async with ThreadWorker(recorder(received, bump)) as w:
        w.post_message_with_shared_sendable({"counter": counter, "plain": plain})
        await w.request("flush")
    assert received[0]["counter"] is counter
    assert counter.value == 10
    assert plain == []  # non-sendable parts are copied


async def test_worker_shares_its_sendable_with_host():
    """A worker's post_message_with_shared_sendable hands the host its very object."""
    owned = Counter()

    def setup(port):
        def on_message(e):
            port.post_message_with_shared_sendable(owned)
            owned.value = 7  # after posting: visible to the host because the object is shared

        port.onmessage = on_message

    async with ThreadWorker(setup) as w:
        w.post_message("go")
        got = await next_message(w)
    assert got is owned
    assert got.value == 7


@pytest.mark.parametrize("count", [1, 300])
async def test_shared_sendables_and_moved_buffers_do_not_count_toward_max_message_size(count):
    """Shared @sendable objects and moved buffers count nothing toward max_message_size: the message passes at
    exactly the pickled size of the same message with a None (one byte) in place of each, less those bytes."""
    counters = [Counter() for _ in range(count)]
    buf = bytearray(100)

    def message(shared: list, moved: object) -> dict:
        return {"shared": shared, "moved": moved, "text": "é" * 50}

    size = len(pickle.dumps(message([None] * count, None), protocol=5)) - count - 1
    async with ThreadWorker(answer, max_message_size=size - 1) as w:
        with pytest.raises(SerializationError):
            w.post_message_with_shared_sendable(message(counters, buf), transfer=[buf])
    received: list = []
    async with ThreadWorker(recorder(received), max_message_size=size) as w:
        w.post_message_with_shared_sendable(message(counters, buf), transfer=[buf])
        await w.request("flush")
    assert list(map(id, received[0]["shared"])) == list(map(id, counters))  # the very objects
    assert received[0]["moved"] is buf


ROUNDS = 200


def incrementer(port):
    """Worker script: on (counter, lock), say "ready", then increment the shared counter ROUNDS times under the lock."""

    async def on_message(e):
        counter, lock = e.data
        port.post_message("ready")
        for _ in range(ROUNDS):
            async with lock:
                value = counter.value
                await asyncio.sleep(0)  # a yield point inside the critical section, not synchronisation
                counter.value = value + 1
        port.post_message("done")

    port.onmessage = on_message


async def test_async_lock_guards_shared_counter_across_host_and_two_workers():
    """AsyncLock held by the host and two workers around a shared counter loses no increment."""
    counter = Counter()
    lock = arkworker.AsyncLock()

    async def host_side():
        for _ in range(ROUNDS):
            async with lock:
                value = counter.value
                await asyncio.sleep(0)  # a yield point inside the critical section, not synchronisation
                counter.value = value + 1

    async with ThreadWorker(incrementer) as w1, ThreadWorker(incrementer) as w2:
        # Hold the lock until both workers are about to contend for it, so all three parties overlap.
        await lock.acquire()
        try:
            w1.post_message_with_shared_sendable((counter, lock))
            w2.post_message_with_shared_sendable((counter, lock))
            assert [await next_message(w1), await next_message(w2)] == ["ready", "ready"]
        finally:
            lock.release()
        done = await asyncio.wait_for(
            asyncio.gather(host_side(), next_message(w1), next_message(w2)), timeout=20
        )
    assert done[1:] == ["done", "done"]
    assert counter.value == 3 * ROUNDS
    assert not lock.locked()


def _deeply_nested(depth: int = 100_000) -> tuple[object, ...]:
    data: tuple[object, ...] = ()
    for _ in range(depth):
        data = (data,)
    return data


async def test_a_message_nested_too_deeply_to_copy_raises_serialization_error_both_ways():
    """A tuple nested deeper than pickle can go is a SerializationError, after onmessageerror, whether the
    host posts it or a request handler returns it; both sides keep working."""
    errors: list[object] = []

    def script(port):
        port.onmessage = lambda e: _deeply_nested() if e.data == "deep" else e.data

    async with ThreadWorker(script) as w:
        w.onmessageerror = lambda event: errors.append(type(event.error))
        with pytest.raises(SerializationError, match="RecursionError"):
            w.post_message(_deeply_nested())
        assert errors == [SerializationError]
        with pytest.raises(SerializationError, match="RecursionError"):
            await asyncio.wait_for(w.request("deep"), 5)
        assert await asyncio.wait_for(w.request("after"), 5) == "after"
    assert w.exit_code == 0


async def test_a_released_memoryview_in_transfer_raises_parameter_error():
    """A memoryview released already (transferred once, say) cannot be transferred: ParameterError."""
    view = memoryview(bytearray(8))
    view.release()
    async with ThreadWorker(answer) as w:
        with pytest.raises(ParameterError, match="released"):
            w.post_message(b"x", transfer=[view])
        assert await asyncio.wait_for(w.request("ok"), 5) == "ok"


class BreaksWhenRebuilt:
    """Pickles fine; rebuilding it raises (its reduction calls int("not a number"))."""

    def __reduce__(self):
        return (int, ("not a number",))


HANDLED_BY = ["onmessageerror", "once", None]


@pytest.mark.parametrize("handled", HANDLED_BY, ids=["onmessageerror", "once-listener", "unhandled"])
async def test_a_worker_message_the_host_cannot_rebuild_is_reported_never_dropped(handled):
    """A message from the worker that the host cannot rebuild goes to the host's onmessageerror (or a
    once("messageerror") listener) with a SerializationError, or, without one, to the host loop's
    exception handler; the messages around it are delivered."""
    reported: list[BaseException] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda loop, context: reported.append(context["exception"])
    )
    w = ThreadWorker(lambda port: [port.post_message(m) for m in ("before", BreaksWhenRebuilt(), "after")])
    if handled == "onmessageerror":
        w.onmessageerror = lambda event: reported.append(event.error)
    elif handled == "once":
        w.once("messageerror", lambda event: reported.append(event.error))
    assert await asyncio.wait_for(w.terminate(), 5) == 0
    assert [m async for m in w.messages()] == ["before", "after"]
    assert [type(exc) for exc in reported] == [SerializationError]


@pytest.mark.parametrize("handled", HANDLED_BY, ids=["onmessageerror", "once-listener", "unhandled"])
async def test_a_host_message_the_worker_cannot_rebuild_is_reported_never_dropped(handled):
    """A message from the host that the worker cannot rebuild goes to the worker's onmessageerror (or a
    once("messageerror") listener), or, without one, to the host loop's exception handler; either way the
    exit code is 1 (a worker-side message error) and the messages around it are handled."""
    reported: list[BaseException] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda loop, context: reported.append(context["exception"])
    )

    def script(port):
        port.onmessage = lambda e: port.post_message(e.data)

        def on_message_error(event):
            port.post_message(("messageerror", type(event.error).__name__))

        if handled == "onmessageerror":
            port.onmessageerror = on_message_error
        elif handled == "once":
            port.once("messageerror", on_message_error)

    w = ThreadWorker(script)
    for message in ("before", BreaksWhenRebuilt(), "after"):
        await w.post_message(message)
    assert await asyncio.wait_for(w.terminate(), 5) == 1
    got = [m async for m in w.messages()]
    if handled:
        assert got == ["before", ("messageerror", "SerializationError"), "after"]
        assert reported == []
    else:
        assert got == ["before", "after"]
        assert [type(exc) for exc in reported] == [SerializationError]
