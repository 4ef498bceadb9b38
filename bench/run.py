"""arkworker benchmark: arkworker against the raw floor and its peers, on this machine.

    python bench/run.py                        every scenario, full size (a few minutes)
    python bench/run.py --quick                every scenario, small sizes (under a minute)
    python bench/run.py A E --only ark,janus   some scenarios, some contenders (the floors always run)
    python bench/run.py --set A_reps=40        change a size (see --list)
    python bench/run.py --json out.json        also write every number

Scenarios: A round trip, B one-way throughput, C start-up, D memory per idle worker, E the price of
isolation (copy vs clone=False). Each scenario runs in a fresh child process (scenario D: a fresh
process per sample); the tables go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from contenders import BY_KEY, Node, close_external
from scenarios import FULL, QUICK, SCENARIOS, SMOKE, Params, log

PEERS = ("uvloop", "anyio", "janus", "culsans", "pykka")


def machine() -> dict[str, Any]:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        pass

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model,
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "switch_interval_s": sys.getswitchinterval(),
        "arkworker": version("arkworker"),
        "peers": {name: version(name) for name in PEERS},
        "node": Node.version(),
        "command": shlex.join(["python", *sys.argv]),  # as the docs give it, not this machine's path
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
    }


def header(info: dict[str, Any], mode: str) -> str:
    peers = ", ".join(f"{name} {v or 'not installed'}" for name, v in info["peers"].items())
    return "\n".join([
        f"# arkworker benchmark ({mode} run)",
        "",
        f"- machine: {info['cpus']} CPUs ({info['cpus_usable']} usable), {info['cpu_model']}, "
        f"{info['platform']}",
        f"- Python {info['python']} (switch interval {info['switch_interval_s'] * 1000:g} ms), "
        f"arkworker {info['arkworker']}",
        f"- peers: {peers}, Node.js {info['node'] or 'not on PATH'}",
        f"- command: `{info['command']}` ({info['date_utc']} UTC)",
    ])  # fmt: skip


def skipped_note(scenarios: list[str]) -> str | None:
    notes = [
        f"{key} ({reason})"
        for key, cls in BY_KEY.items()
        if any(s in cls.scenarios for s in scenarios) and (reason := cls.missing()) is not None
    ]
    return "Skipped: " + "; ".join(notes) + "." if notes else None


def run_in_child(name: str, params: Params, only: str | None) -> dict[str, Any]:
    """Run one scenario in a fresh Python process; its progress goes to our stderr."""
    with tempfile.TemporaryDirectory(prefix="arkbench-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--scenario-child", name, str(out), "--params", json.dumps(params)]
        if only:
            cmd += ["--only", only]
        subprocess.run(cmd, check=True)
        return json.loads(out.read_text())


def scenario_child(name: str, out: str, params: Params, only: str | None) -> None:
    keys = set(only.split(",")) if only else None
    try:
        result = SCENARIOS[name](params, keys)
    finally:
        close_external()
    Path(out).write_text(json.dumps(result))


def memory_child(key: str, workers: int, settle_s: float) -> None:
    cls = BY_KEY[key]

    async def measure_and_exit() -> None:
        result = await cls.memory_in_process(workers, settle_s)
        print(json.dumps(result), flush=True)
        # Exit now, host loop and workers still alive: stopping them is not what is measured (and arkworker
        # terminates the workers of a host loop that ends).
        os._exit(0)

    cls.run_on_host(measure_and_exit())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="any of A B C D E (default: all)")
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes: the whole run takes under a minute")
    size.add_argument(
        "--smoke", action="store_true", help="tiny sizes, for the test suite: numbers mean nothing"
    )
    ap.add_argument("--only", metavar="KEYS", help="comma-separated contender keys; the floors always run")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a size")
    ap.add_argument("--json", metavar="PATH", help="write every number, per repetition too, as JSON")
    ap.add_argument("--list", action="store_true", help="list contenders and sizes, then exit")
    ap.add_argument("--scenario-child", nargs=2, metavar=("NAME", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    ap.add_argument("--mem-child", nargs=3, metavar=("KEY", "N", "SETTLE_S"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.mem_child:
        key, workers, settle_s = args.mem_child
        memory_child(key, int(workers), float(settle_s))
    if args.scenario_child:
        scenario_child(*args.scenario_child, json.loads(args.params), args.only)
        return

    mode = "quick" if args.quick else "smoke" if args.smoke else "full"
    params = dict(QUICK if args.quick else SMOKE if args.smoke else FULL)
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in params:
            sys.exit(f"unknown size {name!r}; known: {', '.join(params)}")
        params[name] = json.loads(value)
    if args.list:
        for key, cls in BY_KEY.items():
            print(f"{key:14} {cls.scenarios:6} {cls.label}  {cls.missing() or ''}")
        print(json.dumps(params))
        return
    chosen = [s.upper() for s in args.scenarios] or list(SCENARIOS)
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        sys.exit(f"unknown scenario(s) {unknown}; choose from {' '.join(SCENARIOS)}")
    if args.only:
        unknown = [k for k in args.only.split(",") if k not in BY_KEY]
        if unknown:
            sys.exit(f"unknown contender(s) {unknown}; see --list")

    info = machine()
    print(header(info, mode), flush=True)
    note = skipped_note(chosen)
    if note:
        print(f"\n{note}", flush=True)
    report: dict[str, Any] = {"machine": info, "mode": mode, "params": params, "scenarios": {}}
    started = time.monotonic()
    for name in chosen:
        t0 = time.monotonic()
        result = run_in_child(name, params, args.only)
        result["wall_s"] = time.monotonic() - t0
        report["scenarios"][name] = result
        print(f"\n## {result['title']}\n\n{result['table']}", flush=True)
        log(f"[{name}] {result['wall_s']:.1f} s")
    report["wall_s"] = time.monotonic() - started
    print(f"\n(wall time {report['wall_s']:.0f} s)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
