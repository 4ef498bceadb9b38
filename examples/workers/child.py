# Runs in the child worker's thread: doubles what it is sent.
import threading

from arkworker import worker_port


def on_message(e):
    return threading.current_thread().name, e.data * 2


worker_port.onmessage = on_message
