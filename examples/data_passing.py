"""Copy, transfer, share: the three ways data crosses between threads."""

import asyncio
import pathlib

from arkworker import AsyncLock, SerializationError, ThreadWorker, sendable

WORKER = pathlib.Path(__file__).parent / "workers" / "mutate.py"


@sendable
class Counter:
    """Shared by reference with post_message_with_shared_sendable; copied by post_message."""

    def __init__(self) -> None:
        self.value = 0
        self.lock = AsyncLock()  # an AsyncLock always crosses by reference


async def main() -> None:
    async with ThreadWorker(WORKER) as w:
        replies = w.messages()

        # 1. Copy (the default): the worker changes its own copy, never the host's object.
        items = ["from the host"]
        await w.post_message(("list", items))
        print("worker's list:", await anext(replies))
        print("host's list:  ", items)

        # 2. Transfer: the buffer's memory moves without a copy; the sender's view is released.
        view = memoryview(bytearray(b"hello world"))
        await w.post_message(("buffer", view), transfer=[view])
        print("worker's bytes:", await anext(replies))
        try:
            view.tobytes()
        except ValueError:
            print("host's view was released by the transfer")

        # 3. Share: a @sendable object crosses by reference; both threads see one object.
        counter = Counter()
        await w.post_message_with_shared_sendable(("counter", counter))
        for _ in range(1000):
            async with counter.lock:  # the same lock the worker takes
                counter.value += 1
        await anext(replies)  # the worker has done its 1000 increments too
        print("shared counter:", counter.value, "(1000 increments from each thread)")

        # post_message copies the same @sendable object instead: the host's counter stays.
        await w.post_message(("counter", counter))
        print("copied counter, worker's value:", await anext(replies), "host's:", counter.value)

        # What cannot be copied raises SerializationError; the worker keeps running.
        try:
            w.post_message(lambda: None)
        except SerializationError as exc:
            print(f"{type(exc).__name__} (code {exc.code})")
    print("worker exited with code", w.exit_code)


if __name__ == "__main__":
    asyncio.run(main())
