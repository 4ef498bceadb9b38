# Runs in the worker thread: posts every message back; "stop" closes the worker from the inside.
from arkworker import worker_port


def on_message(e):
    if e.data == "stop":
        worker_port.close()  # ends after this handler; messages still queued are discarded
        return
    worker_port.post_message(f"echo: {e.data}")


worker_port.onmessage = on_message
