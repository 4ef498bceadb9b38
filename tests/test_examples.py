"""The runnable examples (and so the docs that include them) run and print what they promise."""

from __future__ import annotations

import ast
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
EXAMPLE_FILES = sorted(path.name for path in EXAMPLES.glob("*.py"))
DOCS = ROOT / "docs"

# For each example, lines its output must contain, in this order: a str is the whole line, a
# compiled pattern must match the whole line (for counts that vary from run to run).
EXPECTED: dict[str, list[str | re.Pattern[str]]] = {
    "anyio_cancel.py": [
        "request cancelled by the scope: True",
        "task group results: {0: 0, 1: 2, 2: 4}",
        "handlers cancelled in the worker: 1",
        "worker exited with code 0",
    ],
    "backpressure.py": [
        "worker total: 1999000 expected: 1999000",
        "worker inbox stayed bounded: True",
        "host received: 2000 worker says: produced",
        "host inbox stayed bounded: True",
    ],
    "blocking_work.py": [
        "sleep: slept 0.3 s",
        re.compile(r"host stayed responsive during sleep: True \(\d+ ticks\)"),
        "compute: sum of squares = 8999995500000500000",
        re.compile(r"host stayed responsive during compute: True \(\d+ ticks\)"),
        "worker exited with code 0",
    ],
    "data_passing.py": [
        "worker's list: ['from the host', 'added by the worker']",
        "host's list:   ['from the host']",
        "worker's bytes: b'HELLO world'",
        "host's view was released by the transfer",
        "shared counter: 2000 (1000 increments from each thread)",
        "copied counter, worker's value: 3000 host's: 2000",
        "SerializationError (code 10200006)",
        "worker exited with code 0",
    ],
    "errors.py": [
        re.compile(r"  onerror: RuntimeError: worker gave up at fragile\.py:\d+"),
        "1. exit code after onerror: 1",
        "   then post_message raises WorkerNotRunningError (code 10200004)",
        "  onallerrors: RuntimeError: worker gave up",
        "2. still running after onallerrors: ok: ping",
        "   exit code: 1",
        "3. WorkerCrashedError, caused by RuntimeError('worker gave up')",
        "4. InvalidScriptError (code 10200007)",
    ],
    "global_calls.py": [
        "Hello, Ada!",
        "Bonjour, Grace!",
        "after unregister: GlobalCallObjectNotRegisteredError (code 10200019)",
        "audit: ['greeted Ada', 'greeted Grace']",
        "audit ran on the host thread: True",
    ],
    "hello_host.py": [
        "worker:: res is success",
        "worker exited with code 0",
    ],
    "nested.py": [
        "arkworker-parent asked arkworker-child: 21 * 2 = 42",
        "arkworker-parent asked arkworker-child: 50 * 2 = 100",
        "parent exited with code 0",
        "worker threads left: []",
    ],
    "pool.py": [
        "results: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",
        "pool-0 handled [0, 3, 6, 9]",
        "pool-1 handled [1, 4, 7]",
        "pool-2 handled [2, 5, 8]",
        "exit codes: [0, 0, 0]",
    ],
    "request_reply.py": [
        "add: 6",
        "gathered: [0, 2, 4, 6, 8]",
        "div raised ZeroDivisionError from the worker: division by zero",
        "sleep timed out",
        "handlers cancelled in the worker: 1",
        "worker exited with code 0",
    ],
    "shutdown.py": [
        "  onexit: 0",
        "  exit listener: 0",
        "terminate() returned 0 once the thread had ended; state: TERMINATED",
        "replies: ['echo: one', 'echo: two', 'echo: three']",
        "after terminate(): WorkerNotRunningError (code 10200004)",
        "after close(): exit code 0 - discarded: 2",
        "replies: ['echo: a']",
    ],
    "streaming.py": [
        "received 0",
        "received 1",
        "received 4",
        "received 9",
        "second stream: [0, 1, 4, 9, 16, 25]",
        "worker exited with code 0",
    ],
    "uvloop_workers.py": [
        re.compile(r"host loop: \w+"),
        "uvloop worker: uvloop (Loop)",
        re.compile(r"default worker: asyncio \(\w+\)"),  # WorkerLoop where eventfds exist
    ],
}


def _matches(expected: str | re.Pattern[str], line: str) -> bool:
    if isinstance(expected, str):
        return line == expected
    return expected.fullmatch(line) is not None


# Examples run as a user runs them: without asyncio's debug mode, which logs every deliberately blocking
# handler as a slow callback (the suite also runs once with PYTHONASYNCIODEBUG=1).
EXAMPLE_ENV = {key: value for key, value in os.environ.items() if key != "PYTHONASYNCIODEBUG"}


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_example_runs_and_prints_expected_lines(name: str) -> None:
    """The example exits cleanly, writes nothing to stderr and prints its expected lines in order."""
    assert name in EXPECTED, f"examples/{name} has no expected output in tests/test_examples.py"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=ROOT,
        env=EXAMPLE_ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = iter(result.stdout.splitlines())
    for expected in EXPECTED[name]:
        assert any(_matches(expected, line) for line in lines), (
            f"{expected!r} missing (or out of order) in the output of {name}:\n{result.stdout}"
        )


def test_every_example_is_covered() -> None:
    """Every example file has expected output, and every expected output belongs to an existing example."""
    assert set(EXPECTED) == set(EXAMPLE_FILES)


def test_every_worker_script_is_used() -> None:
    """Every worker script under examples/workers is run by some example, so none goes stale untested."""
    sources = "".join(path.read_text() for path in EXAMPLES.rglob("*.py"))
    unused = [
        path.name for path in sorted((EXAMPLES / "workers").glob("*.py")) if f'"{path.name}"' not in sources
    ]
    assert not unused, f"worker scripts no example runs: {unused}"


def test_repl_session_runs_as_shown() -> None:
    """The asyncio REPL session shown in the docs (examples/repl_session.txt) gives the outputs it shows."""
    session = (EXAMPLES / "repl_session.txt").read_text().splitlines()
    inputs = [line.removeprefix(">>> ") for line in session if line.startswith(">>> ")]
    expected = [
        line
        for line in session
        if not line.startswith((">>> ", "Traceback (most recent call last):", "  ..."))
    ]
    result = subprocess.run(
        [sys.executable, "-u", "-m", "asyncio"],  # unbuffered: results and tracebacks stay in order
        input="\n".join(inputs) + "\n",
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout
    assert result.returncode == 0, output
    # Strip the prompts that the REPL writes in front of each result when its input is not a terminal.
    lines = iter(re.sub(r"^(?:>>> |\.\.\. )+", "", line) for line in output.splitlines())
    for line in expected:
        assert line in lines, f"{line!r} missing (or out of order) in the REPL output:\n{output}"


def _python_blocks(markdown: str) -> list[str]:
    blocks = re.findall(r"^```python\n(.*?)^```$", markdown, flags=re.MULTILINE | re.DOTALL)
    return [textwrap.dedent(block) for block in blocks if not block.lstrip().startswith("--8<--")]


@pytest.mark.parametrize("page", sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")))
def test_inline_doc_samples_compile(page: str) -> None:
    """Python samples written inline in a docs page (not included from examples/) are valid Python."""
    for block in _python_blocks((DOCS / page).read_text()):
        compile(block, page, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)


@pytest.mark.parametrize("page", sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")))
def test_files_included_in_docs_pages_exist(page: str) -> None:
    """Every file a docs page includes (``--8<-- "path"``) exists; a mangled include line would otherwise
    compile as Python and show up in the page as text."""
    for line in (DOCS / page).read_text().splitlines():
        if line.lstrip().startswith("--8"):
            include = re.fullmatch(r'\s*--8<-- "([^"]+)"', line)
            assert include is not None, f"{page}: not an include line: {line!r}"
            assert (ROOT / include[1]).is_file(), f"{page}: includes {include[1]}, which does not exist"
