"""Run Alembic migrations from Python: used by the test fixtures, the embedded runner and the CLI.

``python -m models.migrate`` upgrades the database named by the settings to the latest revision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config

from models.base import SCHEMA

# alembic.ini sits at the repository root, one level above this package.
ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


def alembic_config(database_url: str) -> Config:
    """An Alembic config for ``database_url``.

    The URL travels in ``attributes`` rather than ``sqlalchemy.url`` because the ini option goes
    through ConfigParser interpolation, which breaks on percent-encoded passwords.
    """
    config = Config(str(ALEMBIC_INI))
    config.attributes["database_url"] = database_url
    # Programmatic runs must not reconfigure the host application's logging from alembic.ini.
    config.attributes["configure_logger"] = False
    return config


def upgrade_database(database_url: str, revision: str = "head") -> None:
    """Bring the database at ``database_url`` up to ``revision`` (default: the latest)."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade_database(database_url: str, revision: str = "base") -> None:
    """Undo migrations down to ``revision``; ``base`` removes every table and the schema."""
    command.downgrade(alembic_config(database_url), revision)


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Limit Alembic's reflection to our schema; other schemas in the database are someone else's."""
    del parent_names  # part of Alembic's hook signature, not needed here
    if type_ == "schema":
        return name == SCHEMA
    return True


def comparison_options() -> dict[str, Any]:
    """How Alembic compares the database with the models: shared by autogenerate (env.py) and the
    test that checks the two agree, so both look at the same objects the same way."""
    return {
        "version_table_schema": SCHEMA,
        "include_schemas": True,
        "include_name": include_name,
        "compare_type": True,
        "compare_server_default": True,
    }


def main() -> None:
    from settings import get_settings

    upgrade_database(get_settings().database_url)


if __name__ == "__main__":
    main()
