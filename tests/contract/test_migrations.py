"""The Alembic head and the SQLAlchemy metadata describe the same schema, on both databases."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData, create_engine, inspect, pool

from taskyard.storage import migrate
from taskyard.storage.database import sync_url
from taskyard.storage.tables import metadata


def _diff(url: str, target: MetaData = metadata) -> list[Any]:
    engine = create_engine(sync_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True,
                                                             "compare_server_default": False})
            return compare_metadata(context, target)
    finally:
        engine.dispose()


def test_database_is_at_head(database_url: str) -> None:
    head = ScriptDirectory.from_config(migrate.alembic_config(database_url)).get_current_head()
    assert head is not None
    assert migrate.current_revision(database_url) == head


def test_head_matches_metadata(database_url: str) -> None:
    assert _diff(database_url) == []


def test_the_comparison_sees_a_drift(database_url: str) -> None:
    """Guards the check above against comparing nothing."""
    drifted = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.sorted_tables:
        table.to_metadata(drifted)
    drifted.tables["runs"].append_column(Column("not_migrated", Integer))
    diff = _diff(database_url, drifted)
    assert [d[0] for d in diff] == ["add_column"] and diff[0][3].name == "not_migrated"


def test_every_table_and_index_exists(database_url: str) -> None:
    engine = create_engine(sync_url(database_url), poolclass=pool.NullPool)
    try:
        inspector = inspect(engine)
        assert set(metadata.tables) <= set(inspector.get_table_names())
        for table in metadata.sorted_tables:
            wanted = {ix.name for ix in table.indexes}
            present = {ix["name"] for ix in inspector.get_indexes(table.name)}
            assert wanted <= present, (table.name, wanted - present)
        uniques = {tuple(u["column_names"]) for u in inspector.get_unique_constraints("runs")}
        uniques |= {tuple(ix["column_names"]) for ix in inspector.get_indexes("runs") if ix["unique"]}
        assert ("task_id", "scheduled_for") in uniques
    finally:
        engine.dispose()


def test_upgrade_is_idempotent(database_url: str) -> None:
    migrate.upgrade(database_url)
    assert _diff(database_url) == []
