"""The exception tree, each class carrying its ArkTS error code.

::

    WorkerError                                   code None
    ├── ParameterError (TypeError, ValueError)    401
    ├── WorkerInitializationError                 10200003
    │   └── WorkerOptionError (ParameterError)    401
    ├── WorkerNotRunningError                     10200004
    ├── SerializationError                        10200006
    ├── InvalidScriptError                        10200007
    ├── GlobalCallObjectNotRegisteredError        10200019
    ├── GlobalCallMethodNotCallableError          10200020
    ├── GlobalCallTimeoutError (TimeoutError)     10200021
    ├── WorkerCrashedError                        code None
    └── NotInWorkerError (RuntimeError)           code None
"""

from __future__ import annotations

from typing import ClassVar


class WorkerError(Exception):
    """Root of every error arkworker raises; ``code`` is the ArkTS error code, if ArkTS has one."""

    code: ClassVar[int | None] = None


class ParameterError(WorkerError, TypeError, ValueError):
    """Raised when an argument has the wrong type or value."""

    code = 401


class WorkerInitializationError(WorkerError):
    """Raised by ``ThreadWorker()`` when the worker limit is reached or the options are unusable."""

    code = 10200003


class WorkerOptionError(ParameterError, WorkerInitializationError):
    """Raised by ``ThreadWorker()`` for an option of the wrong type or value: a wrong argument (code 401)
    with which the worker cannot be initialized, so both ``except`` clauses catch it."""


class WorkerNotRunningError(WorkerError):
    """Raised by a call on a worker that is terminating or terminated."""

    code = 10200004


class SerializationError(WorkerError):
    """Raised when a message, argument or result cannot be copied, or is too large."""

    code = 10200006


class InvalidScriptError(WorkerError):
    """Raised by ``ThreadWorker()`` when the script path or module cannot be found or loaded."""

    code = 10200007


class GlobalCallObjectNotRegisteredError(WorkerError):
    """Raised by ``call_global_call_object_method`` for an instance name the host never registered."""

    code = 10200019


class GlobalCallMethodNotCallableError(WorkerError):
    """Raised by ``call_global_call_object_method`` for a missing, non-callable, async or generator method."""

    code = 10200020


class GlobalCallTimeoutError(WorkerError, TimeoutError):
    """Raised by ``call_global_call_object_method`` when the host did not answer in time."""

    code = 10200021


class WorkerCrashedError(WorkerError):
    """Raised when leaving ``async with ThreadWorker(...)`` after a worker error no handler took.

    The worker's original exception is the ``__cause__``.
    """


class NotInWorkerError(WorkerError, RuntimeError):
    """Raised when ``worker_port`` is used outside a worker thread."""


def describe(exc: BaseException) -> str:
    """``"TypeName: message"`` for ``exc``, even when its ``__str__`` raises: an error path must not fail
    on the error it reports."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - any failure of user code here is replaced by a placeholder
        text = "<str() failed>"
    return f"{type(exc).__name__}: {text}"
