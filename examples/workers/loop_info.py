# Runs in the worker thread: answers with the library and the class of the event loop it runs on.
import asyncio

from arkworker import worker_port


def on_message(e):
    loop = type(asyncio.get_running_loop())
    library = "asyncio" if issubclass(loop, asyncio.BaseEventLoop) else loop.__module__
    return f"{library} ({loop.__name__})"


worker_port.onmessage = on_message
