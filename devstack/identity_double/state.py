"""What every part of the double shares: its in-memory state (sessions, access tokens, faults, latency, rate
limit, counters) under one app key, and the shape of an error answer."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web


@dataclass
class Session:
    id: str
    refresh_token: str
    orgs: frozenset[str]
    """The organizations in scope: a snapshot taken when the session was issued or last rotated."""


@dataclass
class Fault:
    status: int | str
    """The status to answer (429 with Retry-After, 403 as a scope mismatch, any other as injected_fault), or
    "hang": hold the request 30 s first."""
    remaining: int
    path: str = ""
    retry_after: float = 1.0
    until: float = 0.0
    """Monotonic deadline: the fault answers every matching request until then (besides `remaining`)."""


@dataclass
class State:
    db: asyncpg.Pool
    service_key: str
    token_ttl: float
    rate_max: int = 0
    rate_window_ms: int = 60_000
    window_start: float = 0.0
    window_count: int = 0
    sessions: dict[str, Session] = field(default_factory=dict)
    access: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> (session id, expires)
    faults: list[Fault] = field(default_factory=list)
    latency: dict[str, float] = field(default_factory=dict)  # path prefix -> seconds
    stats: Counter[str] = field(default_factory=Counter)


STATE = web.AppKey("state", State)


def error(status: int, code: str, message: str = "") -> web.Response:
    """The identity service's error body (the Supabase endpoints answer in Supabase's own shape)."""
    return web.json_response({"error": code, "message": message or code}, status=status)
