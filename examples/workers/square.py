# Runs in each pool worker's thread: answers n with (this worker's name, n * n).
import asyncio

from arkworker import worker_port


async def on_message(e):
    await asyncio.sleep(0.01 * (e.data % 3))  # uneven work: replies finish out of order
    return worker_port.name, e.data * e.data


worker_port.onmessage = on_message
