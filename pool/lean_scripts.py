"""bullmq's Lua scripts called without redis-py's per-call overhead.

Every job makes at least one script call (`moveToFinished`, `moveToActive`). redis-py's `AsyncScript.__call__`
imports its Pipeline class and checks the client against it (a typing-Protocol `isinstance`, ~0.8 us) on every
call, copies keys and arguments into a new tuple, and goes through `evalsha` and `_evalsha` to
`execute_command`: ~2.5 us a call. `LeanScript` sends the same `EVALSHA` straight to the client's
`execute_command`; when Redis does not know the script (NOSCRIPT: a restart, a `SCRIPT FLUSH`, another server
behind the same address) or a caller passes a client of its own (a pipeline), redis-py's script object does
the call as before, loading the script first. Upstream-ready: the change belongs in redis-py's
`AsyncScript.__call__` (tests/test_overrides.py guards it).
"""

from __future__ import annotations

from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError


class LeanScript:
    def __init__(self, script: AsyncScript) -> None:
        self.script = script
        self._execute = script.registered_client.execute_command

    async def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        if client is not None:
            return await self.script(keys, args, client)
        keys = keys or []
        try:
            return await self._execute("EVALSHA", self.script.sha, len(keys), *keys, *(args or ()))
        except NoScriptError:
            return await self.script(keys, args)


def lean_scripts(commands: dict[str, Any]) -> None:
    """Replace, in place, each redis-py script object of bullmq's command table (`Scripts.commands`)."""
    for name, script in list(commands.items()):
        if isinstance(script, AsyncScript):
            commands[name] = LeanScript(script)
