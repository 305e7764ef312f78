"""Queue `identity-events`: job contracts in DESIGN.md section 3.

Handlers land with their issue; until then a job here fails at once as an unknown job name
(kept in the failed set, requeue-able with `ma-worker enqueue --requeue-failed identity-events`).
"""

from __future__ import annotations

from typing import Any

HANDLERS: dict[str, Any] = {}
