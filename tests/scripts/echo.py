# A worker that answers every request with ("echo", data) and raises on "boom".
import asyncio

from arkworker import worker_port


async def on_message(e):
    if e.data == "boom":
        raise ValueError("bad input")
    if e.data == "slow":
        await asyncio.sleep(30)
    return ("echo", e.data)


worker_port.onmessage = on_message
