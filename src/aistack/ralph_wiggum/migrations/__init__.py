"""The store's schema under Alembic: every change is a revision in `versions/`, for SQLite and
PostgreSQL alike, shipped inside the package so an installed wheel can upgrade its database.

A store upgrades its database to the head when it opens (`Store.__init__`); `aistack db upgrade`
and `aistack db current` do the same by hand. A database from before the migrations (made by
`create_all`, without `alembic_version`) passes through the baseline, which creates only the
tables it lacks, and keeps every row. On PostgreSQL the processes that start together (API
replicas, workers) take turns through an advisory lock, so one of them migrates.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

_HERE = Path(__file__).parent
_LOCK = 0x61697374  # pg_advisory_xact_lock's key for "a process migrates the store"


def _config(connection=None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision this code knows."""
    found = ScriptDirectory.from_config(_config()).get_current_head()
    assert found is not None
    return found


def current(engine: Engine) -> str | None:
    """The database's revision (None: not under migrations yet, or empty)."""
    with engine.connect() as db:
        return MigrationContext.configure(db).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to `revision`, in one transaction where the database allows it."""
    with engine.begin() as db:
        if db.dialect.name == "postgresql":
            db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
        if MigrationContext.configure(db).get_current_revision() == head() and revision == "head":
            return  # the common start: nothing to do, and no need to read every script
        command.upgrade(_config(db), revision)
