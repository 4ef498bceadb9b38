# Runs in the worker thread: answers "hello world" with "success".
from arkworker import worker_port


def on_message(e):
    if e.data == "hello world":
        worker_port.post_message("success")


worker_port.onmessage = on_message
