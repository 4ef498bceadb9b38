# Worker for request-error tests: answers "ok" with "fine", raises LookupError otherwise.
# "async:..." makes the handler fail inside a coroutine instead of synchronously.
import asyncio

from arkworker import worker_port


def fail(data):
    raise LookupError(f"no such key: {data}")


async def fail_later(data):
    await asyncio.sleep(0)
    fail(data)


def on_message(e):
    if e.data == "ok":
        return "fine"
    if str(e.data).startswith("async:"):
        return fail_later(e.data)
    fail(e.data)


worker_port.onmessage = on_message
