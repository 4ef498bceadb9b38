# Runs in a worker thread and starts a worker of its own; requests are passed down to the child.
import pathlib
import threading

from arkworker import ThreadWorker, worker_port

# The top level runs inside this worker's event loop, so it may create workers. The child is
# terminated automatically when this worker exits.
child = ThreadWorker(pathlib.Path(__file__).parent / "child.py", name="child")


async def on_message(e):
    child_thread, doubled = await child.request(e.data)
    return f"{threading.current_thread().name} asked {child_thread}: {e.data} * 2 = {doubled}"


worker_port.onmessage = on_message
