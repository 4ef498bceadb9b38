"""arkworker: the ArkTS ``ThreadWorker`` model for asyncio.

Each worker runs its own event loop on a dedicated OS thread; the host awaits its replies, its messages
and its exit instead of polling. ``import arkworker as worker`` makes the ArkTS spelling read naturally::

    import arkworker as worker

    w = worker.ThreadWorker("examples/workers/hello.py")
"""

import inspect as _inspect
import sys as _sys
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from ._buffer import MessageIterator as MessageIterator
from ._errors import GlobalCallMethodNotCallableError as GlobalCallMethodNotCallableError
from ._errors import GlobalCallObjectNotRegisteredError as GlobalCallObjectNotRegisteredError
from ._errors import GlobalCallTimeoutError as GlobalCallTimeoutError
from ._errors import InvalidScriptError as InvalidScriptError
from ._errors import NotInWorkerError as NotInWorkerError
from ._errors import ParameterError as ParameterError
from ._errors import SerializationError as SerializationError
from ._errors import WorkerCrashedError as WorkerCrashedError
from ._errors import WorkerError as WorkerError
from ._errors import WorkerInitializationError as WorkerInitializationError
from ._errors import WorkerNotRunningError as WorkerNotRunningError
from ._errors import WorkerOptionError as WorkerOptionError
from ._events import ErrorEvent as ErrorEvent
from ._events import Event as Event
from ._events import MessageEvent as MessageEvent
from ._events import ThreadWorkerPriority as ThreadWorkerPriority
from ._events import WorkerState as WorkerState
from ._events import WorkerStatistics as WorkerStatistics
from ._limits import set_max_workers as set_max_workers
from ._port import ThreadWorkerGlobalScope as ThreadWorkerGlobalScope
from ._port import worker_port_for as _worker_port_for
from ._sendable import AsyncLock as AsyncLock
from ._sendable import sendable as sendable
from ._worker import ThreadWorker as ThreadWorker

if _TYPE_CHECKING:
    from ._port import worker_port as worker_port

__all__ = (
    "AsyncLock",
    "ErrorEvent",
    "Event",
    "GlobalCallMethodNotCallableError",
    "GlobalCallObjectNotRegisteredError",
    "GlobalCallTimeoutError",
    "InvalidScriptError",
    "MessageEvent",
    "MessageIterator",
    "NotInWorkerError",
    "ParameterError",
    "SerializationError",
    "ThreadWorker",
    "ThreadWorkerGlobalScope",
    "ThreadWorkerPriority",
    "WorkerCrashedError",
    "WorkerError",
    "WorkerInitializationError",
    "WorkerNotRunningError",
    "WorkerOptionError",
    "WorkerState",
    "WorkerStatistics",
    "sendable",
    "set_max_workers",
    "worker_port",
)

# Reprs, tracebacks and docs show arkworker.X, not the private module that defines X.
for _name in __all__:
    _obj = globals().get(_name)
    if isinstance(_obj, type) or _inspect.isfunction(_obj):
        _obj.__module__ = __name__


def __getattr__(name: str) -> _Any:
    if name == "worker_port":
        return _worker_port_for(_sys._getframe(1))  # the frame that reads it
    if name == "__version__":
        from importlib.metadata import version  # noqa: PLC0415 - only when asked for

        return version("arkworker")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "worker_port", "__version__"})
