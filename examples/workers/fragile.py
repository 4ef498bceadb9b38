# Runs in the worker thread: fails on "crash", answers anything else.
from arkworker import worker_port


def on_message(e):
    if e.data == "crash":
        raise RuntimeError("worker gave up")
    return f"ok: {e.data}"


worker_port.onmessage = on_message
