"""Waiting on a Textual app under Pilot: on its workers, never on a sleep."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot

ENDLESS = {"bulk"}
"""Worker groups that run for the app's whole life (ma-top's bulk-channel listener): never waited on."""


async def settle(pilot: Pilot[Any]) -> None:
    """Until every worker that can finish has finished and the app has handled what they posted."""
    await pilot.pause()
    while busy := [w for w in pilot.app.workers if w.group not in ENDLESS and not w.is_finished]:
        await pilot.app.workers.wait_for_complete(busy)
        await pilot.pause()
