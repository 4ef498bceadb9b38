# The top level uses the running loop to start a task, which posts a message once it runs.
import asyncio
import threading

from arkworker import worker_port

top_loop = asyncio.get_running_loop()  # RuntimeError if the top level ran outside a running loop
top_thread = threading.get_ident()


async def announce():
    await worker_port.post_message(("task ran", asyncio.get_running_loop() is top_loop))


task = top_loop.create_task(announce())


def on_message(e):
    return {
        "same_loop": asyncio.get_running_loop() is top_loop,
        "same_thread": threading.get_ident() == top_thread,
        "task_done": task.done(),
    }


worker_port.onmessage = on_message
