# A worker that creates its own workers (its loop is their host) and relays to them.
import pathlib

from arkworker import ThreadWorker, worker_port

CHILD = pathlib.Path(__file__).with_name("lim_child.py")
children = []


async def on_message(e):
    command, arg = e.data
    if command == "spawn":  # arg: the child's name
        children.append(ThreadWorker(CHILD, name=arg))
        return len(children)
    if command == "ask":  # request the newest child, then read what it posted
        child = children[-1]
        reply = await child.request(arg)
        async for posted in child.messages():
            return reply, posted
    if command == "close":
        worker_port.close()
        return None
    if command == "crash":
        raise RuntimeError("parent crashed on purpose")
    raise ValueError(f"unknown command {command!r}")


worker_port.onmessage = on_message
