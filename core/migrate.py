"""Bring the database to the newest schema with Alembic (tests, `ftsvc migrate`,
`ftsvc serve`). The migrations ship inside the installed package (`migrations/`), so
this works from an installed image as from the source tree; alembic.ini at the
repository root is for the `alembic` command line (new revisions)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

import migrations

MIGRATIONS = Path(migrations.__file__).resolve().parent


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade_database() -> None:
    command.upgrade(alembic_config(), "head")


def known_revisions() -> tuple[set[str], set[str]]:
    """The head revisions and every revision of the shipped migrations."""
    script = ScriptDirectory.from_config(alembic_config())
    return set(script.get_heads()), {revision.revision for revision in script.walk_revisions()}
