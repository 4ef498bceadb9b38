"""What a worker runs: a ``.py`` file, a dotted module or a callable, each in a fresh namespace."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import itertools
import os
import sys
import sysconfig
import types
from collections.abc import Callable
from typing import Any

from ._errors import InvalidScriptError, ParameterError

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_STDLIB_DIRS = tuple(
    {os.path.abspath(sysconfig.get_paths()[key]) + os.sep for key in ("stdlib", "platstdlib")}
)
# Installed packages, whose directory may lie inside the standard library's (a virtual environment's
# platstdlib holds its site-packages).
_SITE_DIRS = tuple({os.path.abspath(sysconfig.get_paths()[key]) + os.sep for key in ("purelib", "platlib")})
_counter = itertools.count(1)
MODULE_PREFIX = "__arkworker_"  # a script's module is named this, a number unique to its worker, and "__"


class Script:
    """A resolved script, checked on the host so a bad path fails in the constructor."""

    __slots__ = ("kind", "module_name", "target")

    def __init__(self, kind: str, target: Any) -> None:
        self.kind = kind  # "file", "module" or "callable"
        self.target = target
        # A file or module runs as a fresh module under this unique name, registered in sys.modules
        # while the worker lives so that pickle finds the classes it defines.
        self.module_name = f"{MODULE_PREFIX}{next(_counter)}__"

    def describe(self) -> str:
        """A short name for messages and default worker names."""
        if self.kind == "callable":
            qualname = getattr(self.target, "__qualname__", None)
            return repr(self.target) if qualname is None else str(qualname)
        if self.kind == "file":
            return os.path.basename(str(self.target))
        return str(self.target.name)


def resolve(script: object) -> Script:
    """Host thread: check that ``script`` exists; raise ``InvalidScriptError`` or ``ParameterError``."""
    if callable(script):
        return Script("callable", script)
    if isinstance(script, os.PathLike):
        script = os.fspath(script)
    if not isinstance(script, str) or not script:
        raise ParameterError(
            f"script must be a path to a .py file, a dotted module name or a callable, "
            f"not {type(script).__name__}"
        )
    looks_like_path = script.endswith(".py") or os.sep in script or "/" in script
    if looks_like_path or os.path.isfile(script):
        path = os.path.abspath(script)
        if not os.path.isfile(path):
            problem = "is not a file" if os.path.exists(path) else "does not exist"
            raise InvalidScriptError(f"worker script {script!r} {problem} (looked at {path})")
        return Script("file", path)
    try:
        spec = importlib.util.find_spec(script)
    except Exception as exc:  # finding it imports its parent packages, which may fail
        raise InvalidScriptError(f"worker module {script!r} cannot be found: {exc!r}") from exc
    if spec is None:
        raise InvalidScriptError(f"worker module {script!r} cannot be found")
    origin = spec.origin or ""
    if (
        getattr(spec.loader, "get_code", None) is None
        or origin in ("built-in", "frozen")
        or origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    ):
        raise InvalidScriptError(
            f"worker module {script!r} has no Python code to run ({origin or 'no file'})"
        )
    return Script("module", spec)


def run_top_level(script: Script, port: object) -> object:
    """Worker thread: run the script's top level; a callable's return value is returned."""
    if script.kind == "callable":
        fn: Callable[[object], object] = script.target
        return fn(port)
    module = types.ModuleType(script.module_name)
    sys.modules[script.module_name] = module
    if script.kind == "file":
        path: str = script.target
        module.__file__ = path
        with open(path, "rb") as source:
            code = compile(source.read(), path, "exec")
    else:
        spec = script.target
        module.__file__ = spec.origin
        module.__package__ = spec.parent
        module.__spec__ = spec
        get_code = getattr(spec.loader, "get_code", None)
        if get_code is None:
            raise InvalidScriptError(f"worker module {spec.name!r} has no loadable code")
        code = get_code(spec.name)
    exec(code, module.__dict__)  # noqa: S102 - running the worker's script is the point
    return None


def forget(script: Script) -> None:
    """Drop the script's module from ``sys.modules`` once nothing it sent is left to rebuild."""
    sys.modules.pop(script.module_name, None)


def user_location(exc: BaseException) -> tuple[str, int, int]:
    """``(filename, lineno, colno)`` of the innermost frame of user code that raised ``exc``.

    User code is anything outside arkworker, the standard library and the installed packages; without
    any, the innermost frame of an installed package is used, and without that, the innermost frame
    outside arkworker.
    """
    if isinstance(exc, SyntaxError) and exc.filename:
        return exc.filename, exc.lineno or 0, exc.offset or 0
    user: tuple[str, int, int] | None = None
    installed: tuple[str, int, int] | None = None
    outside: tuple[str, int, int] = ("", 0, 0)
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not filename.startswith(_PACKAGE_DIR):
            outside = (filename, tb.tb_lineno, _column(tb))
            if filename.startswith(_SITE_DIRS):
                installed = outside
            elif not filename.startswith(_STDLIB_DIRS):
                user = outside
        tb = tb.tb_next
    return user or installed or outside


def _column(tb: types.TracebackType) -> int:
    # 1-based column of the instruction that raised, 0 when unknown.
    positions = list(tb.tb_frame.f_code.co_positions())
    index = tb.tb_lasti // 2
    if 0 <= index < len(positions):
        column = positions[index][2]
        if column is not None:
            return column + 1
    return 0
