# Runs in the worker thread: for a message n, streams the squares of 0..n-1, then None as end marker.
from arkworker import worker_port


async def on_message(e):
    for i in range(e.data):
        await worker_port.post_message(i * i)  # waits while the host's inbox is full
    await worker_port.post_message(None)


worker_port.onmessage = on_message
