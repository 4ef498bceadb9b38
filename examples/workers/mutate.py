# Runs in the worker thread: changes what it receives and reports back what it saw.
from arkworker import worker_port


async def on_message(e):
    kind, obj = e.data
    if kind == "list":
        obj.append("added by the worker")  # the worker's own copy
        worker_port.post_message(obj)
    elif kind == "buffer":
        obj[:5] = b"HELLO"  # the transferred memory itself: no copy was made
        worker_port.post_message(bytes(obj))
    elif kind == "counter":
        for _ in range(1000):
            async with obj.lock:
                obj.value += 1
        worker_port.post_message(obj.value)


worker_port.onmessage = on_message
