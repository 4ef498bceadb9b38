# Answers a request with facts about the worker thread it runs on (names, nice value, loop type).
import asyncio
import os
import sys
import threading

from arkworker import worker_port


def _comm():
    if not sys.platform.startswith("linux"):
        return None
    with open(f"/proc/self/task/{threading.get_native_id()}/comm", encoding="utf-8", errors="replace") as f:
        return f.read().rstrip("\n")


def _nice():
    if not hasattr(os, "getpriority"):
        return None
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def on_message(e):
    return {
        "port_name": worker_port.name,
        "thread_name": threading.current_thread().name,
        "comm": _comm(),
        "nice": _nice(),
        "loop_type": type(asyncio.get_running_loop()),
        "ident": threading.get_ident(),
        "native_id": threading.get_native_id(),
    }


worker_port.onmessage = on_message
