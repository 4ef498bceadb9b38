# A nested worker: posts a note to its host (a worker) and answers every request.
import threading

from arkworker import worker_port


def on_message(e):
    worker_port.post_message(("child posted", e.data))
    return ("child replied", e.data, threading.current_thread().name)


worker_port.onmessage = on_message
