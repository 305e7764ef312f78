"""Alembic migrations of the tasks database (the schema the worker owns)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations to `database_url` (sync driver URL or plain postgresql://)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["database_url"] = database_url
    command.upgrade(config, revision)
