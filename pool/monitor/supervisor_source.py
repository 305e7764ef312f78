"""supervisord over XML-RPC (unix socket or http), called in a thread so no event loop ever blocks on it."""

from __future__ import annotations

import asyncio
import xmlrpc.client
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from supervisor.xmlrpc import SupervisorTransport


@dataclass(frozen=True)
class ProcessInfo:
    endpoint: str
    group: str
    name: str
    state: str
    pid: int
    start: int
    now: int
    description: str
    exitstatus: int = 0
    spawnerr: str = ""
    stop: int = 0
    """Epoch seconds of its last exit or stop (0: never)."""

    @property
    def full_name(self) -> str:
        return f"{self.group}:{self.name}"

    @property
    def uptime_s(self) -> int:
        return max(0, self.now - self.start) if self.state == "RUNNING" else 0


def endpoint_label(endpoint: str) -> str:
    """What a person sees for an endpoint, never its credentials: `host-a` for `unix:///srv/host-a/var/supervisor.sock`
    (the directory holding the state dir), `host-a:9001` for `http://user:secret@host-a:9001`."""
    if endpoint.startswith("unix://"):
        parts = endpoint.removeprefix("unix://").rstrip("/").split("/")
        return parts[-3] if len(parts) >= 3 and parts[-2] == "var" else parts[-1]
    url = urlsplit(endpoint)
    return f"{url.hostname}:{url.port}" if url.port else (url.hostname or endpoint)


def scrub(text: str, endpoint: str) -> str:
    """An error's text with the endpoint's credentials gone (xmlrpc's errors quote `user:password@host`)."""
    text = text.replace(endpoint, endpoint_label(endpoint))
    url = urlsplit(endpoint)
    if url.password:
        text = text.replace(f"{url.username}:{url.password}@", "").replace(url.password, "***")
    return text


def _proxy(endpoint: str) -> Any:
    """A fresh proxy per call: SupervisorTransport keeps a dead connection after one failure."""
    if endpoint.startswith("unix://"):
        return xmlrpc.client.ServerProxy(
            "http://127.0.0.1", transport=SupervisorTransport(None, None, endpoint)
        )
    return xmlrpc.client.ServerProxy(endpoint.rstrip("/") + "/RPC2")


def _read(endpoint: str) -> list[ProcessInfo]:
    infos = _proxy(endpoint).supervisor.getAllProcessInfo()
    return [
        ProcessInfo(
            endpoint,
            p["group"],
            p["name"],
            p["statename"],
            p["pid"],
            p["start"],
            p["now"],
            p["description"],
            p.get("exitstatus", 0),
            p.get("spawnerr", ""),
            p.get("stop", 0),
        )
        for p in infos
    ]


async def read_processes(
    endpoints: list[str], timeout: float = 3.0
) -> tuple[list[ProcessInfo], dict[str, str]]:
    """Every endpoint's processes; an endpoint that fails is reported in the errors, the rest still count."""
    results = await asyncio.gather(
        *(asyncio.wait_for(asyncio.to_thread(_read, e), timeout) for e in endpoints), return_exceptions=True
    )
    processes: list[ProcessInfo] = []
    errors: dict[str, str] = {}
    for endpoint, result in zip(endpoints, results, strict=True):
        if isinstance(result, BaseException):
            label = endpoint_label(endpoint)
            text = f"{type(result).__name__}: {result}" if str(result) else type(result).__name__
            errors[label] = scrub(text, endpoint)
        else:
            processes.extend(result)
    return processes, errors


async def supervisor_call(endpoint: str, method: str, *args: Any) -> Any:
    """stopProcess / startProcess / tailProcessStdoutLog ... in a thread (XML-RPC is blocking)."""

    def call() -> Any:
        return getattr(_proxy(endpoint).supervisor, method)(*args)

    try:
        return await asyncio.to_thread(call)
    except xmlrpc.client.Fault as fault:
        raise RuntimeError(f"supervisord {method}: {fault.faultString}") from None
    except (
        OSError,
        xmlrpc.client.ProtocolError,
    ) as error:  # unreachable, refused credentials: said, scrubbed
        raise RuntimeError(
            scrub(f"supervisord {method}: {type(error).__name__}: {error}", endpoint)
        ) from None


async def tail_log(endpoint: str, name: str, length: int = 4000) -> str:
    """The last `length` bytes of a process's stdout log."""
    text = await supervisor_call(endpoint, "tailProcessStdoutLog", name, 0, length)
    return str(text[0])
