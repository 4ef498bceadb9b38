# Runs in the worker thread: answers a name with a greeting, calling host objects synchronously.
from arkworker import worker_port


def on_message(e):
    # Each call blocks this thread (at most 1000 ms) while the host loop runs the method.
    greeting = worker_port.call_global_call_object_method("settings", "get", 1000, "greeting")
    worker_port.call_global_call_object_method("audit", "record", 1000, f"greeted {e.data}")
    return f"{greeting}, {e.data}!"


worker_port.onmessage = on_message
