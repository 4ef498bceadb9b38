"""The benchmark runs end to end on tiny sizes and prints its tables. Timings are never asserted."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

RUN = pathlib.Path(__file__).resolve().parent.parent / "bench" / "run.py"


@pytest.mark.timeout(180)
def test_bench_smoke_run_prints_every_table(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = proc.stdout
    assert "# arkworker benchmark (smoke run)" in text
    assert "- command: `" in text
    for title in (
        "## A. Round trip",
        "## B. One-way throughput",
        "## C. Start-up",
        "## D. Memory",
        "## E. The price",
    ):
        assert title in text
    for key in ("floor", "floor-uv", "ark", "ark-uvw", "ark-uv"):
        assert f"\n| {key} | " in text, f"no {key} row"
    assert "| 1 KiB dict |" in text

    report = json.loads(out.read_text())
    scenarios = report["scenarios"]
    assert set(scenarios) == {"A", "B", "C", "D", "E"}
    for name in "ABC":
        assert {"floor", "ark", "ark-uv"} <= set(scenarios[name]["results"])
    for name in "AC":
        assert "floor-request" in scenarios[name]["results"]
    assert {"floor-batch", "floor-onmessage"} <= set(scenarios["B"]["results"])
    assert "ark@5" in scenarios["D"]["results"]
    assert {"ark", "ark-nocopy", "floor"} <= set(scenarios["E"]["results"]["1 KiB dict"])


@pytest.mark.timeout(120)
def test_apart_quick_run_prints_each_figure() -> None:
    """bench/apart.py (the costs taken apart) runs end to end and prints each of its figures."""
    proc = subprocess.run(
        [sys.executable, str(RUN.with_name("apart.py")), "--quick"],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    for line in (
        "throughput, apart: host",
        "calls per round trip",
        "start: ThreadWorker(...)",
        "copy of a 3-key dict, round trip over clone=False's: bare .copy(), no checks",
        "bytecodes per message",
        "bytecodes per round trip",
        "bytecodes per lifecycle",
    ):
        assert line in proc.stdout
