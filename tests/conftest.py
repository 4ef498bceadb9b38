"""Shared fixtures: every test must leave no worker thread behind."""

from __future__ import annotations

import asyncio
import pathlib
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from support import LoopErrors

import arkworker

HERE = pathlib.Path(__file__).parent
SCRIPTS = HERE / "scripts"
EXAMPLES = HERE.parent / "examples"


def worker_threads() -> list[threading.Thread]:
    """Live threads that arkworker started."""
    return [t for t in threading.enumerate() if t.name.startswith("arkworker-")]


@pytest.fixture(autouse=True)
def _no_leaked_workers() -> Iterator[None]:
    yield
    # A test that terminated its workers has joined their threads; allow threads of workers that were
    # told to stop a moment to finish, then fail on any that is still alive.
    deadline = time.monotonic() + 5
    while worker_threads() and time.monotonic() < deadline:
        worker_threads()[0].join(timeout=max(0.0, deadline - time.monotonic()))
    leaked = worker_threads()
    assert not leaked, f"worker threads leaked by this test: {[t.name for t in leaked]}"


@pytest.fixture(autouse=True)
def _default_limit() -> Iterator[None]:
    yield
    arkworker.set_max_workers(64)


@pytest.fixture
def scripts() -> pathlib.Path:
    """The folder of worker scripts used by the tests."""
    return SCRIPTS


@pytest.fixture
async def loop_errors() -> AsyncIterator[LoopErrors]:
    """Record what reaches the test loop's exception handler, and restore the previous handler after."""
    loop = asyncio.get_running_loop()
    errors = LoopErrors()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(errors.handler)
    try:
        yield errors
    finally:
        loop.set_exception_handler(previous)
