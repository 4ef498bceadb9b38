# Runs in the worker thread: answers with the class of the event loop it runs on.
import asyncio

from arkworker import worker_port


def on_message(e):
    loop = asyncio.get_running_loop()
    return f"{type(loop).__module__}.{type(loop).__name__}"


worker_port.onmessage = on_message
