# Keeps a task alive forever; prints when that task is cancelled (the worker was terminated).
# A request is answered only once that task is running, so its cleanup is sure to run at termination.
import asyncio

from arkworker import worker_port

running = asyncio.Event()


async def life():
    try:
        running.set()
        await asyncio.get_running_loop().create_future()
    finally:
        print("worker cleaned up", flush=True)


task = asyncio.get_running_loop().create_task(life())


async def on_message(e):
    await running.wait()
    return "ready"


worker_port.onmessage = on_message
