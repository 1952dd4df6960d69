"""The schema, in SQLAlchemy Core. Alembic migrations must match it (a test checks)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from taskyard.storage.types import JSONDocument, UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
Id = BigInteger().with_variant(Integer(), "sqlite")

# Every row that belongs to a namespace carries project_id; a fresh install has one default tenant and
# project (id 1), which is where APIs without a tenant in their path act when auth is off.
DEFAULT_PROJECT_ID = 1

tenants = Table(
    "tenants",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
)

projects = Table(
    "projects",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("tenant_id", Id, nullable=False),
    Column("name", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant_id", "name", name="uq_projects_tenant_name"),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("project_id", Id, nullable=False, server_default=str(DEFAULT_PROJECT_ID)),
    Column("name", String(255), nullable=False),
    Column("description", Text),
    Column("task_type", String(64), nullable=False),
    Column("executor", String(64), nullable=False),
    Column("command", Text, nullable=False),
    Column("arguments", JSONDocument, nullable=False),
    Column("schedule", String(255)),
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    Column("catchup", String(16), nullable=False, server_default="latest"),
    Column("priority", String(16), nullable=False),
    Column("retry_count", Integer, nullable=False),
    Column("timeout_seconds", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("tags", JSONDocument, nullable=False),
    Column("metadata", JSONDocument, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("last_run_at", UTCDateTime),
    Column("next_run_at", UTCDateTime),
    Column("last_success_at", UTCDateTime),
    Column("last_run_status", String(16)),
    Column("deleted_at", UTCDateTime),
)
Index("uq_tasks_live_name", tasks.c.project_id, tasks.c.name, unique=True,
      sqlite_where=text("deleted_at IS NULL"), postgresql_where=text("deleted_at IS NULL"))
Index("ix_tasks_due", tasks.c.next_run_at, sqlite_where=text("deleted_at IS NULL"),
      postgresql_where=text("deleted_at IS NULL"))
Index("ix_tasks_created_at", tasks.c.created_at)

task_dependencies = Table(
    "task_dependencies",
    metadata,
    Column("task_id", Id, primary_key=True),
    Column("depends_on_id", Id, primary_key=True),
)
Index("ix_task_dependencies_depends_on_id", task_dependencies.c.depends_on_id)

runs = Table(
    "runs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("project_id", Id, nullable=False, server_default=str(DEFAULT_PROJECT_ID)),
    Column("task_id", Id, nullable=False),
    Column("task_name", String(255), nullable=False),
    Column("task_type", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("priority", String(16), nullable=False),
    Column("priority_rank", Integer, nullable=False),
    # The run id that code outside taskyard chose when it reported its first tracking event.
    Column("external_id", String(255)),
    # Latest overall progress the task reported (percent), and what it said it is doing.
    Column("progress", Float),
    Column("current_activity", JSONDocument),
    Column("submitted_by", String(255)),
    Column("parameters", JSONDocument, nullable=False),
    Column("timeout_seconds", Integer, nullable=False),
    Column("max_retries", Integer, nullable=False),
    Column("retry_count", Integer, nullable=False, server_default="0"),
    Column("attempt", Integer, nullable=False, server_default="0"),
    Column("trigger", String(16), nullable=False),
    Column("worker_id", String(255)),
    Column("worker_hostname", String(255)),
    Column("lease_expires_at", UTCDateTime),
    Column("available_at", UTCDateTime, nullable=False),
    Column("scheduled_for", UTCDateTime),
    Column("restarted_from", Id),
    Column("idempotency_key", String(255)),
    Column("result", Text),
    Column("error_message", Text),
    Column("exit_code", Integer),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("queued_at", UTCDateTime),
    Column("started_at", UTCDateTime),
    Column("completed_at", UTCDateTime),
    Column("execution_time", Float),
    UniqueConstraint("task_id", "scheduled_for", name="uq_runs_cron_slot"),
)
# The claim query walks this index: queued runs by priority, then age.
Index("uq_runs_external_id", runs.c.project_id, runs.c.external_id, unique=True,
      sqlite_where=text("external_id IS NOT NULL"), postgresql_where=text("external_id IS NOT NULL"))
Index("ix_runs_claim", runs.c.status, runs.c.priority_rank.desc(), runs.c.id)
Index("ix_runs_task_id_created_at", runs.c.task_id, runs.c.created_at)
Index("ix_runs_worker_id_status", runs.c.worker_id, runs.c.status)
Index("ix_runs_created_at", runs.c.created_at)
Index("ix_runs_task_status_completed_at", runs.c.task_id, runs.c.status, runs.c.completed_at)
# One per sort and filter of the run list (0008), so a page reads its own rows and not every run's.
Index("ix_runs_status_created_at", runs.c.status, runs.c.created_at)
Index("ix_runs_worker_id_created_at", runs.c.worker_id, runs.c.created_at)
Index("ix_runs_priority_rank_created_at", runs.c.priority_rank, runs.c.created_at)
Index("ix_runs_started_at", runs.c.started_at)
Index("ix_runs_completed_at", runs.c.completed_at)
Index("ix_runs_execution_time", runs.c.execution_time)
Index("ix_runs_lease", runs.c.lease_expires_at, sqlite_where=text("status = 'running'"),
      postgresql_where=text("status = 'running'"))

# Finished runs counted per task and final status (storage/tallies.py), so statistics never read every
# run: a final run never changes and runs are never deleted, so each is counted once, for good. Runs up to
# `run_tally_marks.through_id` are counted here, or listed in `run_tally_open` while they were unfinished
# when passed; statistics add the runs after the mark and the open ones, read as they are.
run_tallies = Table(
    "run_tallies",
    metadata,
    Column("task_id", Id, primary_key=True),
    Column("status", String(16), primary_key=True),
    Column("project_id", Id, nullable=False),
    Column("runs", BigInteger, nullable=False),
    Column("seconds", Float, nullable=False),  # the sum of their execution times
    Column("timed", BigInteger, nullable=False),  # how many have an execution time
)

run_tally_marks = Table(
    "run_tally_marks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # one row, id 1
    Column("through_id", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime),
)

run_tally_open = Table(
    "run_tally_open",
    metadata,
    Column("run_id", Id, primary_key=True, autoincrement=False),
)

run_waits = Table(
    "run_waits",
    metadata,
    Column("run_id", Id, primary_key=True),
    Column("dependency_run_id", Id, primary_key=True),
)
Index("ix_run_waits_dependency_run_id", run_waits.c.dependency_run_id)

run_history = Table(
    "run_history",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("run_id", Id, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("worker_id", String(255)),
    Column("reason", Text),
)
Index("ix_run_history_run_id", run_history.c.run_id, run_history.c.id)

run_logs = Table(
    "run_logs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("run_id", Id, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("timestamp", UTCDateTime, nullable=False),
    Column("level", String(16), nullable=False),
    Column("stream", String(16), nullable=False),
    Column("message", Text, nullable=False),
    # Structured lines from the tracking SDK carry these; stdout/stderr lines leave them empty.
    Column("component", String(255)),
    Column("stage", String(255)),
    Column("details", JSONDocument),
)
Index("ix_run_logs_run_id", run_logs.c.run_id, run_logs.c.id)
Index("ix_run_logs_timestamp", run_logs.c.timestamp, postgresql_using="brin")  # PostgreSQL: BRIN (0006)

# Progress by stage, kept current as tracking events arrive so reads never replay the event stream.
run_stages = Table(
    "run_stages",
    metadata,
    Column("run_id", Id, primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("stage_order", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("progress", Float),
    Column("records_processed", BigInteger),
    Column("total_records", BigInteger),
    Column("started_at", UTCDateTime),
    Column("ended_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("metrics", JSONDocument),
)

# Metric samples: what the task reports (track.metric) and what the worker measures of the run's
# process tree (cpu, memory, disk, network).
run_samples = Table(
    "run_samples",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("run_id", Id, nullable=False),
    Column("name", String(255), nullable=False),
    Column("value", Float, nullable=False),
    Column("unit", String(32)),
    Column("source", String(16), nullable=False),
    Column("timestamp", UTCDateTime, nullable=False),
)
Index("ix_run_samples_run_id", run_samples.c.run_id, run_samples.c.name, run_samples.c.id)
Index("ix_run_samples_timestamp", run_samples.c.timestamp, postgresql_using="brin")  # PostgreSQL: BRIN (0006)

run_events = Table(
    "run_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("run_id", Id, nullable=False),
    Column("project_id", Id, nullable=False),
    Column("name", String(255), nullable=False),
    Column("data", JSONDocument),
    Column("timestamp", UTCDateTime, nullable=False),
)
Index("ix_run_events_run_id", run_events.c.run_id, run_events.c.id)
Index("ix_run_events_timestamp", run_events.c.timestamp, postgresql_using="brin")  # PostgreSQL: BRIN (0006)

workers = Table(
    "workers",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("project_id", Id, nullable=False, server_default=str(DEFAULT_PROJECT_ID)),
    Column("hostname", String(255), nullable=False),
    Column("ip_address", String(64), nullable=False),
    Column("port", Integer, nullable=False),
    Column("task_types", JSONDocument, nullable=False),
    Column("max_concurrent_tasks", Integer, nullable=False),
    Column("current_task_count", Integer, nullable=False, server_default="0"),
    Column("status", String(16), nullable=False),
    Column("last_heartbeat", UTCDateTime, nullable=False),
    Column("registered_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("metadata", JSONDocument, nullable=False),
    Column("load_average", Float),
    Column("memory_usage", BigInteger),
    Column("cpu_usage", Float),
    Column("deleted", Boolean, nullable=False, server_default=text("false")),
)
Index("ix_workers_status", workers.c.status)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False),
    Column("prefix", String(32), nullable=False, unique=True),
    Column("key_hash", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    # None: every project (admins); otherwise the one project this key acts in.
    Column("project_id", Id),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", String(255), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(128), nullable=False),
    Column("status_code", Integer),
    Column("body", Text),
    Column("created_at", UTCDateTime, nullable=False),
)
