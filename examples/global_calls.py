"""Global call objects: the worker calls methods of host objects synchronously."""

import asyncio
import pathlib
import threading

from arkworker import GlobalCallObjectNotRegisteredError, ThreadWorker

WORKER = pathlib.Path(__file__).parent / "workers" / "greeter.py"


class Settings:
    """Host-side configuration the worker reads."""

    def __init__(self) -> None:
        self.values = {"greeting": "Hello"}

    def get(self, key: str) -> str:
        return self.values[key]


class Audit:
    """Host-side log the worker writes to; its methods run on the host loop's thread."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.on_host_thread = True

    def record(self, line: str) -> int:
        self.on_host_thread &= threading.current_thread() is threading.main_thread()
        self.lines.append(line)
        return len(self.lines)


async def main() -> None:
    settings, audit = Settings(), Audit()
    async with ThreadWorker(WORKER) as w:
        w.register_global_call_object("settings", settings)
        w.register_global_call_object("audit", audit)
        print(await w.request("Ada"))
        settings.values["greeting"] = "Bonjour"  # the worker sees the host's live object
        print(await w.request("Grace"))
        w.unregister_global_call_object("audit")
        try:
            await w.request("Linus")
        except GlobalCallObjectNotRegisteredError as exc:
            print(f"after unregister: {type(exc).__name__} (code {exc.code})")
    print("audit:", audit.lines)
    print("audit ran on the host thread:", audit.on_host_thread)


if __name__ == "__main__":
    asyncio.run(main())
