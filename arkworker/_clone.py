"""What "send" means: copy by pickle, move buffers, share sendables.

Pure functions, no threads and no loops. ``pack`` runs on the sender's thread and returns what crosses;
``unpack`` runs on the receiver's thread and gives the receiver its own object.

- Immutable builtins (and tuples and frozensets of them) cross as they are: nothing to copy.
- A small flat ``dict`` or ``list`` (at most ``FLAT_ITEMS`` keys or items, each an immutable scalar, a
  str or a bytes) is copied with ``.copy()``: its items need no copy, so this is what pickle would give,
  and the receiver has nothing to rebuild.
- Everything else is pickled (protocol 5), so the receiver can never mutate the sender's objects. Classes
  travel by reference, as both ends share one process: pickle names them, and a class it cannot name
  (defined inside a function) crosses as a reference. A message that is a function is refused.
- A buffer listed in ``transfer`` crosses by reference without a copy; a transferred ``memoryview`` is
  released on the sender's side and the receiver gets a fresh view of the same memory.
- An instance of a ``@sendable`` class is copied like anything else, except inside
  ``post_message_with_shared_sendable``, where it crosses by reference. An ``AsyncLock`` always crosses by
  reference: a copied lock would guard nothing.
"""

from __future__ import annotations

import functools
import io
import pickle
import re
import sys
import threading
import types
from collections.abc import Sequence
from typing import Any, TypeVar

from ._errors import ParameterError, SerializationError, describe
from ._script import MODULE_PREFIX

T = TypeVar("T")

_SCALARS: frozenset[type] = frozenset({type(None), bool, float})
# Pickle's overhead beyond the payload, at most (protocol 5: header, frame, opcode, length, memo, stop).
_OVERHEAD = 18

# Messages that cross as they are without being measured: pickled, none is over SMALL_SIZE bytes.
SMALL_KINDS: frozenset[type] = frozenset({type(None), bool, float, int})
SMALL_SIZE = 32
INT_MIN, INT_MAX = -(2**63), 2**63  # the range of small ints
_MUTABLE: frozenset[type] = frozenset({dict, list, set, bytearray})  # the common messages that need a copy
FLAT_ITEMS = 8  # the most keys or items a flat dict or list may hold to be copied without pickle
_FIXED_SIZE: frozenset[type] = frozenset({type(None), bool, int, float})  # int: a small one
_FRAME_SIZE = 64 * 1024  # pickle (protocol 5) frames its output by this much; smaller fits one frame
# A message that is one of these is refused: pickle would only name the function, not copy it.
_FUNCTIONS: frozenset[type] = frozenset(
    {types.FunctionType, types.BuiltinFunctionType, types.MethodType, functools.partial}
)
NO_TRANSFER: tuple[()] = ()
"""The default ``transfer``: nothing moves. Any other value is checked, ``None`` and ``[]`` included."""


def immutable_size(data: object) -> int:
    """An upper bound of the pickled size of ``data`` if it is made only of immutable builtins (None,
    bool, int, float, complex, str, bytes, and tuples and frozensets of them), else -1.

    Such data crosses without a copy: nobody can mutate it.
    """
    kind = type(data)
    if kind is int:
        return data.bit_length() // 8 + 1 + _OVERHEAD  # type: ignore[attr-defined,no-any-return]
    if kind is str:
        return 4 * len(data) + _OVERHEAD  # type: ignore[arg-type]
    if kind in _SCALARS:
        return SMALL_SIZE
    if kind is complex:
        return 64  # pickled by reduction: 57 bytes
    if kind is bytes:
        return len(data) + _OVERHEAD  # type: ignore[arg-type]
    if kind is tuple or kind is frozenset:
        total = _OVERHEAD
        for item in data:  # type: ignore[attr-defined]
            size = immutable_size(item)
            if size < 0:
                return -1
            total += size
        return total
    return -1


class Packed(bytes):
    """A copied message in flight: its pickle, and the objects that cross by reference (most have none).

    A ``bytes`` subclass, so the common message, with nothing by reference, costs one object.
    """

    refs: list[object] | tuple[()] = ()
    transferred: list[object] | tuple[()] = ()
    # The modules of the workers' scripts whose classes the pickle names: kept for the receiver, as the
    # worker may exit (and its module leave sys.modules) before the message is rebuilt.
    scripts: dict[str, types.ModuleType] = {}  # noqa: RUF012 - never changed: each copy gets its own


class _State(threading.local):
    # The objects that cross by reference in the pack or unpack running on this thread; None outside one.
    refs: list[object] | None = None
    # True iff the pack running on this thread shares @sendable objects.
    share: bool = False


_state = _State()


def _by_reference(index: int) -> object:
    refs = _state.refs
    if refs is None:
        raise pickle.UnpicklingError("a shared object can only be unpickled by arkworker")
    return refs[index]


def reduce_shared(obj: object) -> tuple[Any, tuple[int]] | None:
    """The pickle reduction that makes ``obj`` cross by reference, or None when not inside a pack."""
    refs = _state.refs
    if refs is None:
        return None
    refs.append(obj)
    return (_by_reference, (len(refs) - 1,))


def sharing() -> bool:
    """True iff the pack running on this thread shares ``@sendable`` objects."""
    return _state.share


# The formats a memoryview can be rebuilt in: memoryview.cast takes native single characters only.
_VIEW_FORMATS: frozenset[str] = frozenset("bBhHiIlLqQnNfdc?P")


def _rebuilt_view(data: bytes, fmt: str, shape: tuple[int, ...], readonly: bool) -> memoryview:
    """The receiver's copy of a memoryview: a view of its own copy of the bytes, in the same format and
    shape, writable if the original was."""
    view = memoryview(data if readonly else bytearray(data))
    return view if fmt == "B" and len(shape) == 1 else view.cast(fmt, shape)  # type: ignore[call-overload]


class _ClassesByReference(pickle.Pickler):
    """Pickles classes by reference rather than by name, and memoryviews, which pickle refuses, as a copy
    of their bytes (inside a pack)."""

    def reducer_override(self, obj: object) -> Any:  # a reduction, or NotImplemented
        if isinstance(obj, type):
            return reduce_shared(obj)
        if type(obj) is memoryview:
            fmt = obj.format.lstrip("@")
            # memoryview.cast cannot rebuild other formats, nor more dimensions than one if one is empty.
            if fmt in _VIEW_FORMATS and (obj.ndim <= 1 or 0 not in (obj.shape or ())):
                return (_rebuilt_view, (obj.tobytes(), fmt, obj.shape, obj.readonly))
        return NotImplemented


class _TransferPickler(_ClassesByReference):
    def __init__(self, file: io.BytesIO, transfer_ids: dict[int, int]) -> None:
        super().__init__(file, protocol=5)
        self._transfer_ids = transfer_ids
        self.moved_size = 0  # the bytes the moved buffers took in the pickle: they do not count

    def persistent_id(self, obj: object) -> int | None:
        index = self._transfer_ids.get(id(obj))
        if index is not None:
            self.moved_size += 1 + _index_size(index)  # the index, then BINPERSID
        return index


class _Unpickler(pickle.Unpickler):
    """Takes moved buffers as they are, and finds the classes of workers' scripts in the modules that the
    copy kept (their workers may have exited)."""

    def __init__(
        self, file: io.BytesIO, transferred: list[object], scripts: dict[str, types.ModuleType]
    ) -> None:
        super().__init__(file)
        self._transferred = transferred
        self._scripts = scripts

    def persistent_load(self, pid: Any) -> object:
        return self._transferred[pid]

    def find_class(self, module: str, name: str) -> Any:
        script = self._scripts.get(module)
        if script is None:
            return super().find_class(module, name)
        return functools.reduce(getattr, name.split("."), script)


def transfer_list(transfer: object) -> list[object]:
    """The buffers to move: none for ``NO_TRANSFER``, else ``check_transfer(transfer)``."""
    return [] if transfer is NO_TRANSFER else check_transfer(transfer)


def moves_a_view(buffers: list[object]) -> bool:
    """True iff a buffer to move is a memoryview: the sender's view is released and the receiver gets a
    fresh one, so the message is packed even by a worker with ``clone=False``."""
    return any(isinstance(item, memoryview) for item in buffers)


def check_transfer(transfer: object) -> list[object]:
    """Return ``transfer`` as a list, or raise ``ParameterError`` if it is not a sequence of buffers."""
    if not isinstance(transfer, (list, tuple)):
        raise ParameterError(f"transfer must be a list or tuple of buffers, not {type(transfer).__name__}")
    for item in transfer:
        try:
            memoryview(item).release()
        except TypeError:
            raise ParameterError(
                f"transfer items must export a buffer (bytearray, memoryview, array, ndarray), "
                f"not {type(item).__name__}"
            ) from None
        except ValueError as exc:  # a released memoryview: transferred once already, say
            raise ParameterError(f"a transfer item cannot be moved: {exc}") from None
    return list(transfer)


def pack(data: object, transfer: Sequence[object], *, share: bool, max_size: int) -> object:
    """Sender's thread: what crosses for ``data``. Raises ``SerializationError`` if it cannot be copied."""
    if not transfer:
        kind = type(data)
        if kind in SMALL_KINDS and (kind is not int or INT_MIN < data < INT_MAX) and max_size >= SMALL_SIZE:  # type: ignore[operator]
            return data
        if (kind is dict or kind is list) and len(data) <= FLAT_ITEMS:  # type: ignore[arg-type]
            copy = _flat_copy(data, max_size)  # type: ignore[arg-type]
            if copy is not None:
                return copy
        try:
            size = -1 if kind in _MUTABLE else immutable_size(data)
        except RecursionError:  # nested too deep to measure: pickle decides, and refuses
            size = -1
        if 0 <= size <= max_size:
            return data
        if size > max_size:  # a bound, not the size: measure before refusing
            if len(pickle.dumps(data, protocol=5)) > max_size:
                raise SerializationError(f"message is over the {max_size}-byte max_message_size when copied")
            return data
    elif len(transfer) == 1 and data is transfer[0] and not isinstance(data, memoryview):
        return data  # the message is the one buffer it transfers: it crosses as it is, unpickled
    if type(data) in _FUNCTIONS:
        raise SerializationError(
            f"cannot copy {type(data).__name__} {getattr(data, '__qualname__', '')!r}: a function is code, "
            f"not data (send what it should work on, or register a global call object)"
        )
    refs: list[object] = []
    _state.refs = refs
    if share:
        _state.share = True
    try:
        moved_size = 0
        if transfer:
            blob, transferred, moved_size = _pickle_with_transfer(data, list(transfer))
        else:
            try:
                blob, transferred = pickle.dumps(data, protocol=5), []
            except (pickle.PicklingError, AttributeError, TypeError):
                # Pickle names classes, and cannot name one defined inside a function, or in the script of
                # a worker that has exited: both ends share one process, so they cross by reference. And
                # it refuses memoryviews, which cross as a copy of their bytes.
                refs.clear()
                file = io.BytesIO()
                _ClassesByReference(file, protocol=5).dump(data)
                blob, transferred = file.getvalue(), []
    except Exception as exc:
        raise SerializationError(f"cannot copy {type(data).__name__}: {describe(exc)}") from exc
    finally:
        _state.refs = None
        if share:
            _state.share = False
    # Shared sendables and moved buffers do not count.
    size = len(blob) - moved_size - (_references_size(len(refs)) if refs else 0)
    if size > max_size:
        raise SerializationError(
            f"message is {size} bytes when copied, over the {max_size}-byte max_message_size"
        )
    packed = _packed(blob)
    if refs or transferred:
        packed.refs, packed.transferred = refs, transferred
        for item in transfer:
            if isinstance(item, memoryview):
                item.release()
    return packed


def _flat_copy(data: dict[Any, Any] | list[Any], max_size: int) -> object:
    """A copy of ``data`` if every key and item is None, a bool, a small int, a float, a str or a bytes,
    and an upper bound of its pickled size fits ``max_size`` and one pickle frame; else None (then pickle
    decides)."""
    # immutable_size()'s bounds for one level, inlined and tightened: a call per item would cost about
    # what the pickle and unpickle it saves cost.
    items = (*data, *data.values()) if type(data) is dict else data
    size = _OVERHEAD + 10 * len(items)  # opcode, length and memo of each item: at most 10 bytes
    for item in items:
        kind = type(item)
        if kind is str or kind is bytes:
            size += 4 * len(item)  # 4 UTF-8 bytes a character at most
        elif kind not in _FIXED_SIZE or (kind is int and not INT_MIN < item < INT_MAX):
            return None
    # Past one frame, pickle adds a frame header (9 bytes) after each large item: not counted above.
    return data.copy() if size <= max_size and size < _FRAME_SIZE else None


def _packed(blob: bytes) -> Packed:
    """``blob`` as it crosses, with the modules of the workers' scripts whose classes it names."""
    packed = Packed(blob)
    if _SCRIPT_MARK in blob:
        named = {match.decode() for match in _SCRIPT_NAME.findall(blob)}
        packed.scripts = {name: sys.modules[name] for name in named if name in sys.modules}
    return packed


_SCRIPT_MARK = MODULE_PREFIX.encode()
_SCRIPT_NAME = re.compile(re.escape(_SCRIPT_MARK) + rb"\d+__")


def _index_size(index: int) -> int:
    """The bytes pickle writes for ``index``: BININT1, BININT2 or BININT and its operand."""
    return 2 if index < 256 else 3 if index < 65536 else 5


def _references_size(count: int) -> int:
    """The bytes that ``count`` objects crossing by reference (``_by_reference(0)`` to ``(count - 1)``)
    take in a pickle.

    The first writes ``_by_reference``'s name (37 bytes: two strings and a global, with their memos); each
    later one a 2-byte get of it (5 bytes past pickle's 256th memo entry: then 3 of them count). Then each
    writes its index, a tuple, a reduce and two memos (4 bytes and the index's).
    """
    full = min(count, 256) * _index_size(0) + max(0, min(count, 65536) - 256) * _index_size(256)
    return 37 - 2 + count * (2 + 4) + full + max(0, count - 65536) * _index_size(65536)


def _pickle_with_transfer(data: object, transfer: list[object]) -> tuple[bytes, list[object], int]:
    """The pickle of ``data``, the receiver's buffers, and the bytes the moved buffers took in the pickle."""
    transfer_ids = {id(item): index for index, item in enumerate(transfer)}
    # The receiver's objects: the same buffers; a memoryview becomes a fresh view of the same memory.
    transferred = [memoryview(item) if isinstance(item, memoryview) else item for item in transfer]
    file = io.BytesIO()
    pickler = _TransferPickler(file, transfer_ids)
    pickler.dump(data)
    return file.getvalue(), transferred, pickler.moved_size


def unpack(obj: object) -> Any:
    """Receiver's thread: the receiver's own copy of what ``pack`` produced."""
    if type(obj) is not Packed:
        return obj
    refs, transferred, scripts = obj.refs, obj.transferred, obj.scripts
    try:
        if not refs and not transferred and not scripts:
            return pickle.loads(obj)
        _state.refs = list(refs)
        try:
            # A script's classes are found in the modules the copy kept: its worker may exit at any time.
            if transferred or scripts:
                return _Unpickler(io.BytesIO(obj), list(transferred), scripts).load()
            return pickle.loads(obj)
        finally:
            _state.refs = None
    except Exception as exc:
        raise SerializationError(f"cannot rebuild the message: {describe(exc)}") from exc
