"""The scenarios: one function each, returning its numbers and a Markdown table.

Every scenario interleaves its contenders and rotates their order every repetition (A B C, B C A, ...),
so slow drift of a shared machine hits them alike. A ratio to a floor is the median over repetitions of
(contender's value / floor's value in the same repetition).
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable, Sequence
from typing import Any

from contenders import BY_KEY, FLOORS, RoundtripBlock

Params = dict[str, Any]

FULL: Params = {
    "A_reps": 25, "A_n": 1000, "A_warm": 200,
    "B_reps": 7, "B_n": 200_000, "B_warm": 20_000,
    "C_reps": 30, "C_k": 20,
    "D_reps": 3, "D_counts": [100, 1000], "D_node": 20, "D_settle_s": 0.3,
    "E_reps": 25, "E_n": 500, "E_warm": 50,
}  # fmt: skip
QUICK: Params = {
    "A_reps": 4, "A_n": 400, "A_warm": 100,
    "B_reps": 2, "B_n": 50_000, "B_warm": 5_000,
    "C_reps": 3, "C_k": 5,
    "D_reps": 1, "D_counts": [100, 1000], "D_node": 10, "D_settle_s": 0.3,
    "E_reps": 3, "E_n": 150, "E_warm": 20,
}  # fmt: skip
SMOKE: Params = {
    "A_reps": 1, "A_n": 20, "A_warm": 5,
    "B_reps": 1, "B_n": 300, "B_warm": 30,
    "C_reps": 1, "C_k": 1,
    "D_reps": 1, "D_counts": [5], "D_node": 2, "D_settle_s": 0.03,
    "E_reps": 1, "E_n": 5, "E_warm": 1,
}  # fmt: skip

# Scenario E: what crosses, built once per block. 1 KiB dict: 32 short string pairs (~1 KiB pickled).
PAYLOADS: dict[str, Callable[[], Any]] = {
    "int": lambda: 1,
    "small dict (3 keys)": lambda: {"id": 42, "op": "get", "key": "user:42"},
    "1 KiB dict": lambda: {f"key{i:02d}": f"value-{i:020d}" for i in range(32)},
    "1 MiB bytes": lambda: bytes(1 << 20),
    "8 MiB bytearray, transferred": lambda: bytearray(8 << 20),
}
TRANSFERRED = "8 MiB bytearray, transferred"
PHASES = ("start", "first_rt", "stop", "total")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- statistics and formatting ---------------------------------------------------------------------
def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of ``values`` (sorted here)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def rep_ratio(values: Sequence[float], refs: Sequence[float] | None) -> dict[str, float] | None:
    """Median and quartiles over repetitions of values[i] / refs[i]; None without a reference."""
    if not refs or not values:
        return None
    ratios = [v / r for v, r in zip(values, refs, strict=True)]
    return {"median": statistics.median(ratios), "q1": percentile(ratios, 25), "q3": percentile(ratios, 75)}


def fmt_ratio(ratio: dict[str, float] | None, iqr: bool = False) -> str:
    if ratio is None:
        return "-"
    text = f"{ratio['median']:.2f}"
    return f"{text} ({ratio['q1']:.2f}-{ratio['q3']:.2f})" if iqr else text


def fmt_rate(per_s: float) -> str:
    if per_s >= 1e6:
        return f"{per_s / 1e6:.2f} M"
    return f"{per_s / 1e3:.1f} k" if per_s >= 1e3 else f"{per_s:.0f}"


def us(ns: float) -> str:
    return f"{ns / 1000:.1f}"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def rotated(items: Sequence[Any], rep: int) -> list[Any]:
    k = rep % len(items) if items else 0
    return [*items[k:], *items[:k]]


def contenders_for(scenario: str, only: set[str] | None) -> list[str]:
    """Keys of the runnable contenders of ``scenario``, in display order; the floors are always kept."""
    return [
        key
        for key, cls in BY_KEY.items()
        if scenario in cls.scenarios
        and cls.missing() is None
        and (only is None or key in only or key in FLOORS)
    ]


def interleave(
    groups: Sequence[Sequence[Any]], reps: int, measure: Callable[[Any, bool], Any], warm_up: bool = True
) -> dict[Any, list[Any]]:
    """``measure(item, warming)`` for every item, rep after rep; within each group the order rotates every
    rep (A B C, B C A, ...). An untimed round goes first when ``warm_up``."""
    per: dict[Any, list[Any]] = {item: [] for group in groups for item in group}
    for rep in range(-1 if warm_up else 0, reps):
        for group in groups:
            for item in rotated(group, max(rep, 0)):
                result = measure(item, rep < 0)
                if rep >= 0:
                    per[item].append(result)
        if rep >= 0:
            log(f"  rep {rep + 1}/{reps}")
    return per


def floor_ratios(per_rep: dict[str, list[float]], key: str) -> dict[str, Any]:
    """``key``'s per-rep values against each floor's, as ``ratio_to_<floor>``."""
    return {f"ratio_to_{floor}": rep_ratio(per_rep[key], per_rep.get(floor)) for floor in FLOORS}


# -- A: round trip ---------------------------------------------------------------------------------
def scenario_a(p: Params, only: set[str] | None) -> dict[str, Any]:
    keys = contenders_for("A", only)
    n, warm, reps = p["A_n"], p["A_warm"], p["A_reps"]
    log(f"[A] round trip: {len(keys)} contenders x {reps} reps x {n} round trips")

    def measure(key: str, warming: bool) -> RoundtripBlock:
        return BY_KEY[key].block_roundtrips(warm if warming else n, warm)

    blocks: dict[str, list[RoundtripBlock]] = interleave([keys], reps, measure)
    medians = {key: [statistics.median(b.samples_ns) for b in bs] for key, bs in blocks.items()}
    p99s = {key: [percentile(b.samples_ns, 99) for b in bs] for key, bs in blocks.items()}
    results, rows = {}, []
    for key in keys:
        pooled = [ns for b in blocks[key] for ns in b.samples_ns]
        places = [b.placement for b in blocks[key]]
        r = results[key] = {
            "label": BY_KEY[key].label,
            "round_trips": len(pooled),
            "median_ns": statistics.median(pooled),
            "p99_ns": percentile(pooled, 99),
            "per_s": 1e9 * len(pooled) / sum(pooled),
            "cpu_ns_per_rt": sum(b.cpu_ns for b in blocks[key]) / len(pooled),
            "rep_median_ns": medians[key],
            "rep_p99_ns": p99s[key],
            "placements": places,
            **floor_ratios(medians, key),
            "ratio_to_floor-request": rep_ratio(medians[key], medians.get("floor-request")),
            "p99_ratio_to_floor": rep_ratio(p99s[key], p99s.get("floor")),
        }
        rows.append(
            [
                key,
                r["label"],
                us(r["median_ns"]),
                us(r["p99_ns"]),
                fmt_rate(r["per_s"]),
                us(r["cpu_ns_per_rt"]),
                fmt_ratio(r["ratio_to_floor"], iqr=True),
                fmt_ratio(r["p99_ratio_to_floor"]),
                fmt_ratio(r["ratio_to_floor-uv"]),
                fmt_ratio(r["ratio_to_floor-request"]),
                f"{places.count('same')}/{len(places)}",
            ]
        )
    headers = [
        "key", "contender", "median µs", "p99 µs", "round trips/s", "CPU µs/rt",
        "× floor (IQR)", "p99 × floor", "× floor-uv", "× floor-request", "same vCPU",
    ]  # fmt: skip
    return {
        "title": f"A. Round trip host → worker → host, int payload ({reps} reps × {n}, sequential)",
        "params": {"reps": reps, "n": n, "warm": warm},
        "results": results,
        "table": md_table(headers, rows),
    }


# -- B: one-way throughput ---------------------------------------------------------------------------
def scenario_b(p: Params, only: set[str] | None) -> dict[str, Any]:
    keys = contenders_for("B", only)
    n, warm, reps = p["B_n"], p["B_warm"], p["B_reps"]
    log(f"[B] throughput: {len(keys)} contenders x {reps} reps x {n} messages")

    def measure(key: str, warming: bool) -> tuple[int, int]:
        return BY_KEY[key].block_stream(warm if warming else n, warm)

    per = interleave([keys], reps, measure)
    elapsed = {key: [ns for ns, _ in v] for key, v in per.items()}
    results, rows = {}, []
    for key in keys:
        median = statistics.median(elapsed[key])
        # a throughput ratio is the floor's time over the contender's: above 1 is faster than the floor
        ratios = {
            floor: rep_ratio(elapsed[floor], elapsed[key]) if floor in elapsed else None
            for floor in (*FLOORS, "floor-onmessage")
        }
        r = results[key] = {
            "label": BY_KEY[key].label,
            "messages": n,
            "rep_ns": elapsed[key],
            "ns_per_msg": median / n,
            "worst_ns_per_msg": max(elapsed[key]) / n,
            "msg_per_s": n * 1e9 / median,
            "cpu_ns_per_msg": statistics.median(cpu for _, cpu in per[key]) / n,
            **{f"throughput_ratio_to_{floor}": ratio for floor, ratio in ratios.items()},
        }
        rows.append(
            [
                key,
                r["label"],
                fmt_rate(r["msg_per_s"]),
                f"{r['ns_per_msg'] / 1000:.2f}",
                f"{r['worst_ns_per_msg'] / 1000:.2f}",
                f"{r['cpu_ns_per_msg'] / 1000:.2f}",
                fmt_ratio(ratios["floor"], iqr=True),
                fmt_ratio(ratios["floor-uv"]),
                fmt_ratio(ratios["floor-onmessage"]),
            ]
        )
    headers = [
        "key", "contender", "msg/s", "µs/msg", "µs/msg worst rep", "CPU µs/msg",
        "msg/s × floor (IQR)", "msg/s × floor-uv", "msg/s × floor-onmessage",
    ]  # fmt: skip
    return {
        "title": f"B. One-way throughput: {n:,} small messages, one reply at the end ({reps} reps)",
        "params": {"reps": reps, "n": n, "warm": warm},
        "results": results,
        "table": md_table(headers, rows),
    }


# -- C: start-up -----------------------------------------------------------------------------------
def scenario_c(p: Params, only: set[str] | None) -> dict[str, Any]:
    keys = contenders_for("C", only)
    k, reps = p["C_k"], p["C_reps"]
    log(f"[C] start-up: {len(keys)} contenders x {reps} reps x {k} lifecycles")

    def measure(key: str, warming: bool) -> dict[str, list[int]]:
        return BY_KEY[key].block_startup(1 if warming else k)

    # Blocks of a helper process starting its own workers (Node.js) moved the ratios of the contenders
    # interleaved with them (bench/README.md). So the external contenders are timed after the others, in
    # a pass of their own with the floors, and set against that pass's floors.
    inside = [key for key in keys if BY_KEY[key].host != "external"]
    outside = [key for key in keys if key not in inside]
    passes = [interleave([inside], reps, measure)]
    if outside:
        passes.append(interleave([[key for key in inside if key in FLOORS] + outside], reps, measure))
    per = {key: v for one in reversed(passes) for key, v in one.items()}  # the floors of the first pass
    pass_medians = [
        {key: [statistics.median(phases["total"]) for phases in v] for key, v in one.items()}
        for one in passes
    ]
    results, rows = {}, []
    for key in keys:
        medians = pass_medians[1 if key in outside else 0]
        pooled = {name: [ns for phases in per[key] for ns in phases[name]] for name in PHASES}
        r = results[key] = {
            "label": BY_KEY[key].label,
            "lifecycles": len(pooled["total"]),
            "median_ns": statistics.median(pooled["total"]),
            "p99_ns": percentile(pooled["total"], 99),
            "phase_median_ns": {name: statistics.median(v) for name, v in pooled.items()},
            **floor_ratios(medians, key),
            "ratio_to_floor-request": rep_ratio(medians[key], medians.get("floor-request")),
        }
        phase = {name: f"{ns / 1000:.0f}" for name, ns in r["phase_median_ns"].items()}
        rows.append(
            [
                key,
                r["label"],
                f"{r['median_ns'] / 1000:.0f}",
                f"{r['p99_ns'] / 1000:.0f}",
                f"{phase['start']} / {phase['first_rt']} / {phase['stop']}",
                fmt_ratio(r["ratio_to_floor"], iqr=True),
                fmt_ratio(r["ratio_to_floor-uv"]),
                fmt_ratio(r["ratio_to_floor-request"]),
            ]
        )
    headers = ["key", "contender", "median µs", "p99 µs", "start / first reply / stop µs", "× floor (IQR)",
               "× floor-uv", "× floor-request"]  # fmt: skip
    return {
        "title": f"C. Start-up: construct, first reply, terminated and thread joined ({reps} reps × {k})",
        "params": {"reps": reps, "k": k},
        "results": results,
        "table": md_table(headers, rows),
    }


# -- D: memory ---------------------------------------------------------------------------------------
def scenario_d(p: Params, only: set[str] | None) -> dict[str, Any]:
    keys = contenders_for("D", only)
    reps = p["D_reps"]
    configs = [
        (key, count)
        for key in keys
        for count in ([p["D_node"]] if BY_KEY[key].host == "external" else p["D_counts"])
    ]
    log(f"[D] memory: {len(configs)} configurations x {reps} samples, a fresh process each")

    def measure(config: tuple[str, int], _warming: bool) -> dict[str, Any]:
        key, count = config
        return BY_KEY[key].memory_sample(count, p["D_settle_s"])

    samples = interleave([configs], reps, measure, warm_up=False)
    per_worker = {config: statistics.median(s["per_worker"] for s in v) for config, v in samples.items()}
    results, rows = {}, []
    for (key, count), value in per_worker.items():
        floor = per_worker.get(("floor", count))
        r = results[f"{key}@{count}"] = {
            "label": BY_KEY[key].label,
            "workers": count,
            "per_worker_bytes": value,
            "ratio_to_floor": value / floor if floor else None,
            "rss0_bytes": statistics.median(s["rss0"] for s in samples[key, count]),
            "samples": samples[key, count],
        }
        rows.append(
            [
                key,
                r["label"],
                count,
                f"{value / 1024:.1f}",
                f"{r['ratio_to_floor']:.2f}" if floor else "-",
                f"{r['rss0_bytes'] / 2**20:.1f}",
            ]
        )
    headers = ["key", "contender", "live workers", "KiB RSS per idle worker", "× floor", "RSS before, MiB"]
    return {
        "title": f"D. Memory: RSS increase per live idle worker (median of {reps}, a fresh process each)",
        "params": {"reps": reps, "counts": p["D_counts"], "node_workers": p["D_node"]},
        "results": results,
        "table": md_table(headers, rows),
    }


# -- E: the price of isolation -----------------------------------------------------------------------
def scenario_e(p: Params, only: set[str] | None) -> dict[str, Any]:
    keys = contenders_for("E", only)
    n, warm, reps = p["E_n"], p["E_warm"], p["E_reps"]
    log(f"[E] isolation: {len(keys)} contenders x {len(PAYLOADS)} payloads x {reps} reps x {n} round trips")

    def measure(item: tuple[str, str], warming: bool) -> float:
        payload, key = item
        block = BY_KEY[key].block_roundtrips(
            warm if warming else n, warm, PAYLOADS[payload](), transfer=payload == TRANSFERRED
        )
        return statistics.median(block.samples_ns) if block.samples_ns else 0.0

    medians = interleave([[(payload, key) for key in keys] for payload in PAYLOADS], reps, measure)
    results, rows = {}, []
    for payload in PAYLOADS:
        per = {key: medians[payload, key] for key in keys}
        r = results[payload] = {
            **{key: {"label": BY_KEY[key].label, "rep_median_ns": v, "median_ns": statistics.median(v)}
               for key, v in per.items()},
            "copy_ratio": rep_ratio(per.get("ark", []), per.get("ark-nocopy")),
            "ark_ratio_to_floor": rep_ratio(per.get("ark", []), per.get("floor")),
            "pickle_ratio": rep_ratio(per.get("floor-pickle", []), per.get("floor")),
        }  # fmt: skip
        keys_shown = ("floor", "floor-pickle", "ark", "ark-nocopy")
        rows.append(
            [
                payload,
                *(us(r[key]["median_ns"]) if key in r else "-" for key in keys_shown),
                fmt_ratio(r["pickle_ratio"]),
                fmt_ratio(r["copy_ratio"], iqr=True),
                fmt_ratio(r["ark_ratio_to_floor"]),
            ]
        )
    headers = ["payload (round trip)", "floor µs", "floor + pickle µs", "ark µs (copy)", "ark clone=False µs",
               "floor + pickle / floor", "ark copy / no-copy (IQR)", "ark × floor"]  # fmt: skip
    note = (
        "The transferred bytearray goes out with `post_message(buf, transfer=[buf])` and comes back the same "
        "way from the worker; the other payloads use `request()`, whose answer is copied back too. int and "
        "bytes are immutable, so arkworker passes them without a copy."
    )
    return {
        "title": f"E. The price of isolation: round trip of each payload ({reps} reps × {n})",
        "params": {"reps": reps, "n": n, "warm": warm},
        "results": results,
        "table": md_table(headers, rows) + "\n\n" + note,
    }


SCENARIOS: dict[str, Callable[[Params, set[str] | None], dict[str, Any]]] = {
    "A": scenario_a,
    "B": scenario_b,
    "C": scenario_c,
    "D": scenario_d,
    "E": scenario_e,
}
