# Answers requests with their data; posts "pong" for "ping"; raises on "boom".
from arkworker import worker_port


def on_message(e):
    if e.data == "ping":
        worker_port.post_message("pong")
    elif e.data == "boom":
        raise ValueError("boom")
    return e.data


worker_port.onmessage = on_message
