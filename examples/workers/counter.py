# Runs in the worker thread: adds up the numbers it is sent, and produces numbers on request.
from arkworker import worker_port

state = {"total": 0}  # module state: each worker running this script has its own


async def on_message(e):
    if isinstance(e.data, int):
        state["total"] += e.data
        return None
    op, n = e.data
    if op == "total":
        return state["total"]
    if op == "produce":
        for i in range(n):
            await worker_port.post_message(i)  # waits while the host's inbox is over max_inbox
        return "produced"
    raise ValueError(f"unknown op {op!r}")


worker_port.onmessage = on_message
