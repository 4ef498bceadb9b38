# Runs in the worker thread: a request's reply is what on_message returns (or raises).
import asyncio

from arkworker import worker_port

# How many "sleep" handlers were cancelled because the requester stopped waiting.
stats = {"cancelled": 0}


async def on_message(e):
    op, *args = e.data
    if op == "add":
        return sum(args)
    if op == "div":
        a, b = args
        return a / b  # b == 0 raises ZeroDivisionError, which goes back to the requester
    if op == "sleep":
        try:
            await asyncio.sleep(args[0])
        except asyncio.CancelledError:
            stats["cancelled"] += 1
            raise
        return "woke up"
    if op == "cancelled":
        return stats["cancelled"]
    raise ValueError(f"unknown op {op!r}")


worker_port.onmessage = on_message
