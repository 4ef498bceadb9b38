# Module-level state: each request increments and returns this module's counter.
from arkworker import worker_port

counter = 0


def on_message(e):
    global counter
    counter += 1
    return counter


worker_port.onmessage = on_message
