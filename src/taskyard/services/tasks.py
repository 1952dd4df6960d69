"""Use cases on task definitions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from taskyard.domain.cron import CatchupPolicy, CronError, CronSchedule
from taskyard.domain.dag import find_cycle
from taskyard.domain.errors import Conflict, NotFound, ValidationFailed
from taskyard.domain.models import Task
from taskyard.domain.status import Priority, RunStatus, TaskStatus
from taskyard.services.scheduling import cancel_runs_ahead
from taskyard.services.scope import UNSCOPED, Scope
from taskyard.storage import runs as run_rows
from taskyard.storage import tallies as tally_rows
from taskyard.storage import tasks as task_rows
from taskyard.storage.paging import PageRequest

if TYPE_CHECKING:
    from taskyard.services.core import Core


@dataclass
class TaskSpec:
    name: str
    task_type: str
    command: str
    executor: str | None = None
    description: str | None = None
    arguments: list[str] = field(default_factory=list)
    schedule: str | None = None
    timezone: str = "UTC"
    catchup: str = CatchupPolicy.LATEST.value
    priority: str = Priority.NORMAL.value
    retry_count: int = 3
    timeout_seconds: int = 3600
    dependencies: list[str | int] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskDetail:
    task: Task
    statistics: dict[str, Any]


class TaskService:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def create(self, spec: TaskSpec, *, scope: Scope = UNSCOPED) -> Task:
        """The task lands in the scope's home project; it may depend only on tasks of that project."""
        self._check_fields(vars(spec))
        now = self.core.clock()
        project_id = scope.home
        async with self.core.db.write() as conn:
            if await task_rows.name_taken(conn, spec.name, project_id):
                raise Conflict(f"a task named '{spec.name}' already exists", field="name", value=spec.name)
            depends_on = await _resolve_dependencies(conn, spec.dependencies, project_id)
            values = {
                "uuid": str(uuid.uuid4()), "project_id": project_id, "name": spec.name, "description": spec.description,
                "task_type": spec.task_type, "executor": spec.executor or spec.task_type,
                "command": spec.command, "arguments": spec.arguments, "schedule": spec.schedule or None,
                "timezone": spec.timezone, "catchup": spec.catchup, "priority": spec.priority,
                "retry_count": spec.retry_count, "timeout_seconds": spec.timeout_seconds,
                "status": TaskStatus.ACTIVE, "tags": spec.tags, "metadata": spec.metadata,
                "created_at": now, "updated_at": now,
                "next_run_at": self._next_run(spec.schedule, spec.timezone, now),
            }
            task_id = await task_rows.insert_task(conn, values)
            await task_rows.set_dependencies(conn, task_id, depends_on)
            task = await task_rows.get_task(conn, task_id)
        assert task is not None
        self.core.scheduling.nudge()
        return task

    async def update(self, task_id: int, changes: dict[str, Any], *, scope: Scope = UNSCOPED) -> Task:
        """A new schedule or time zone cancels the runs created ahead of a slot that has not come."""
        self._check_fields(changes)
        now = self.core.clock()
        lifecycle = self.core.lifecycle()
        async with self.core.db.write() as conn:
            task = await self._get(conn, task_id, scope)
            if "name" in changes and await task_rows.name_taken(conn, changes["name"], task.project_id,
                                                                except_id=task_id):
                raise Conflict(f"a task named '{changes['name']}' already exists", field="name",
                               value=changes["name"])
            values = {k: v for k, v in changes.items() if k != "dependencies"}
            if "executor" in values and not values["executor"]:
                values["executor"] = values.get("task_type", task.task_type)
            if "dependencies" in changes:
                depends_on = await _resolve_dependencies(conn, changes["dependencies"], task.project_id)
                edges = await task_rows.all_dependency_edges(conn)
                edges[task_id] = depends_on
                cycle = find_cycle(edges, task_id)
                if cycle is not None:
                    raise ValidationFailed(
                        "dependencies would form a cycle: " + " -> ".join(str(t) for t in cycle),
                        field="dependencies", rule="acyclic", value=changes["dependencies"])
                await task_rows.set_dependencies(conn, task_id, depends_on)
            schedule = values.get("schedule", task.schedule)
            timezone = values.get("timezone", task.timezone)
            if {"schedule", "timezone"} & values.keys():
                self._check_schedule(schedule, timezone)
                values["next_run_at"] = (self._next_run(schedule, timezone, now)
                                         if task.status is TaskStatus.ACTIVE else None)
            values["updated_at"] = now
            await task_rows.update_task(conn, task_id, values)
            if (schedule, timezone) != (task.schedule, task.timezone):
                # After the task's row is written: a tick creating runs ahead is then either refused or seen
                # here (see cron_rows.plan_next).
                await cancel_runs_ahead(conn, lifecycle, task, now=now, why="the task's schedule changed")
            updated = await task_rows.get_task(conn, task_id)
        assert updated is not None
        self.core.publish(lifecycle)
        self.core.scheduling.nudge()
        return updated

    async def delete(self, task_id: int, *, scope: Scope = UNSCOPED) -> int:
        """Soft delete: the runs and their history stay readable; active runs are aborted."""
        now = self.core.clock()
        lifecycle = self.core.lifecycle()
        async with self.core.db.write() as conn:
            task = await self._get(conn, task_id, scope)
            # The task's row first: a cron tick creating its runs ahead is then either refused or seen here.
            await task_rows.update_task(conn, task.id, {"deleted_at": now, "next_run_at": None,
                                                        "updated_at": now})
            for run in await run_rows.active_runs_of_task(conn, task.id):
                await lifecycle.abort(conn, run, now=now, reason=f"task '{task.name}' was deleted")
            await task_rows.drop_edges_to(conn, task.id)
        self.core.publish(lifecycle)
        return task_id

    async def pause(self, task_id: int, *, scope: Scope = UNSCOPED) -> Task:
        return await self._set_status(task_id, TaskStatus.PAUSED, scope)

    async def resume(self, task_id: int, *, scope: Scope = UNSCOPED) -> Task:
        return await self._set_status(task_id, TaskStatus.ACTIVE, scope)

    async def _set_status(self, task_id: int, status: TaskStatus, scope: Scope) -> Task:
        """Pausing cancels the runs created ahead of a slot that has not come; resuming plans from now, so
        slots missed while paused are skipped."""
        now = self.core.clock()
        lifecycle = self.core.lifecycle()
        async with self.core.db.write() as conn:
            task = await self._get(conn, task_id, scope)
            next_run = self._next_run(task.schedule, task.timezone, now) if status is TaskStatus.ACTIVE else None
            await task_rows.update_task(conn, task_id, {"status": status, "updated_at": now,
                                                        "next_run_at": next_run})
            if status is TaskStatus.PAUSED:  # after the row is written, as in `update`
                await cancel_runs_ahead(conn, lifecycle, task, now=now, why="the task was paused")
            updated = await task_rows.get_task(conn, task_id)
        assert updated is not None
        self.core.publish(lifecycle)
        self.core.scheduling.nudge()
        return updated

    async def get(self, task_id: int, *, scope: Scope = UNSCOPED) -> TaskDetail:
        async with self.core.db.read() as conn:
            task = await self._get(conn, task_id, scope)
            found = await tally_rows.figures(conn, project_id=None, task_id=task_id)
        none = tally_rows.Figures()
        stats = {
            "total_runs": sum(f.runs for f in found.values()),
            "successful_runs": found.get(RunStatus.COMPLETED, none).runs,
            "failed_runs": found.get(RunStatus.FAILED, none).runs,
            "aborted_runs": found.get(RunStatus.ABORTED, none).runs,
            "average_execution_time": found.get(RunStatus.COMPLETED, none).average_seconds,
            "last_execution_status": _last_status_word(task.last_run_status),
        }
        return TaskDetail(task, stats)

    async def list(self, *, status: str | None = None, task_type: str | None = None,
                   priority: str | None = None, search: str | None = None,
                   page: PageRequest, scope: Scope = UNSCOPED) -> tuple[list[Task], int]:
        if page.sort not in task_rows.SORTABLE:
            raise ValidationFailed(f"cannot sort tasks by '{page.sort}'", field="sort", rule="one_of",
                                   value=page.sort)
        # Filters on a closed set of values refuse unknown ones (a typo would silently match nothing).
        if status is not None and status not in {s.value for s in TaskStatus}:
            raise ValidationFailed("status must be one of active, paused", field="status", rule="one_of",
                                   value=status)
        self._check_fields({k: v for k, v in (("task_type", task_type), ("priority", priority)) if v is not None})
        async with self.core.db.read() as conn:
            return await task_rows.list_tasks(conn, project_id=scope.project_id, status=status,
                                              task_type=task_type, priority=priority, search=search, page=page)

    async def _get(self, conn: AsyncConnection, task_id: int, scope: Scope) -> Task:
        # A task of another project is "not found", in the same words as one that never existed.
        task = await task_rows.get_task(conn, task_id, project_id=scope.project_id)
        if task is None:
            raise NotFound(f"task {task_id} does not exist", resource="task", id=task_id)
        return task

    def _check_fields(self, values: dict[str, Any]) -> None:
        if "name" in values and not str(values["name"] or "").strip():
            raise ValidationFailed("name must not be empty", field="name", rule="required", value=values["name"])
        if "task_type" in values and values["task_type"] not in self.core.config.task_types:
            raise ValidationFailed(
                f"unknown task_type '{values['task_type']}'; known: {', '.join(sorted(self.core.config.task_types))}",
                field="task_type", rule="one_of", value=values["task_type"])
        if "command" in values and not str(values["command"] or "").strip():
            raise ValidationFailed("command must not be empty", field="command", rule="required",
                                   value=values["command"])
        if "priority" in values and values["priority"] not in {p.value for p in Priority}:
            raise ValidationFailed("priority must be one of low, normal, high, critical", field="priority",
                                   rule="one_of", value=values["priority"])
        if "catchup" in values and values["catchup"] not in {c.value for c in CatchupPolicy}:
            raise ValidationFailed("catchup must be one of latest, all, none", field="catchup",
                                   rule="one_of", value=values["catchup"])
        for number, low, high in (("retry_count", 0, 100), ("timeout_seconds", 1, 7 * 24 * 3600)):
            if number in values and not (low <= values[number] <= high):
                raise ValidationFailed(f"{number} must be between {low} and {high}", field=number,
                                       rule="range", value=values[number])
        if "schedule" in values or "timezone" in values:
            self._check_schedule(values.get("schedule"), values.get("timezone", "UTC"))

    @staticmethod
    def _check_schedule(schedule: str | None, timezone: str) -> None:
        try:
            # An empty timezone is refused too: it would break the schedule the task gets later.
            CronSchedule.parse(schedule or "* * * * *", timezone)
        except CronError as exc:
            field_name = "timezone" if "timezone" in str(exc) else "schedule"
            raise ValidationFailed(str(exc), field=field_name, rule="cron" if field_name == "schedule"
                                   else "timezone", value=schedule if field_name == "schedule" else timezone) from exc

    @staticmethod
    def _next_run(schedule: str | None, timezone: str, now: Any) -> Any:
        if not schedule:
            return None
        return CronSchedule.parse(schedule, timezone).next_after(now)


def _last_status_word(status: str | None) -> str | None:
    if status is None:
        return None
    return "success" if status == RunStatus.COMPLETED else status


async def _resolve_dependencies(conn: AsyncConnection, refs: list[str | int], project_id: int) -> list[int]:
    """Dependencies by id or name, only among the live tasks of `project_id` (others read as unknown)."""
    ids: list[int] = []
    names: list[str] = []
    for ref in refs:
        if isinstance(ref, int) or (isinstance(ref, str) and ref.strip().isdigit()):
            ids.append(int(ref))
        else:
            names.append(str(ref))
    by_name = await task_rows.find_ids_by_name(conn, names, project_id=project_id)
    missing = [n for n in names if n not in by_name]
    found = await task_rows.existing_ids(conn, ids, project_id=project_id)
    missing += [str(i) for i in ids if i not in found]
    if missing:
        raise ValidationFailed(f"unknown dependency: {', '.join(missing)}", field="dependencies",
                               rule="exists", value=refs)
    return sorted(set(ids) | set(by_name.values()))
