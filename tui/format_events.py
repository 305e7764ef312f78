"""A coalesced event row as text: events and what they stand for kept apart, the real span, every process.
The functions live in the data layer (pool/monitor/plain_text.py), so the incident report writes rows as ma-top
shows them."""

from __future__ import annotations

from pool.monitor.plain_text import WHERE_WIDTH as WHERE_WIDTH
from pool.monitor.plain_text import duration as duration
from pool.monitor.plain_text import times as times
from pool.monitor.plain_text import total as total
from pool.monitor.plain_text import where as where
