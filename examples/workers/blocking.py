# Runs in the worker thread: blocking work, which would freeze the host loop if it ran there.
import time

from arkworker import worker_port


def on_message(e):
    if e.data == "sleep":
        time.sleep(0.3)  # blocking I/O stand-in: releases the GIL
        return "slept 0.3 s"
    if e.data == "compute":
        total = sum(i * i for i in range(3_000_000))  # pure-Python CPU work: shares the GIL
        return f"sum of squares = {total}"
    raise ValueError(f"unknown job {e.data!r}")


worker_port.onmessage = on_message
