"""Credential scoping by tenant and project, over HTTP on both databases.

Two tenants with one project each (A and B), one operator key and one worker key per project, and an admin
key without a project. Every spec 2 and spec 1 route that names a task, run or worker answers B's credentials
asking for A's object with the same 404 as for an object that never existed; lists, counts and claims never
cross projects; the admin key without a project sees both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest

from conftest import app_with, server_settings
from taskyard.domain.errors import ValidationFailed

JWT_SECRET = "a-jwt-secret-of-at-least-32-bytes-long!!"
MISSING_RUN, MISSING_TASK, MISSING_WORKER = 987654321, 987654322, "no-such-worker-zz"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Side:
    """One project's credentials and what it made."""

    operator: dict[str, str]
    worker: dict[str, str]
    tenant_uuid: str
    project_uuid: str
    project_id: int
    task_id: int = 0
    run_id: int = 0
    worker_id: str = ""
    external_run: str = ""
    secrets: tuple[str, ...] = ()  # names only A's side may ever see


@dataclass
class World:
    client: httpx.AsyncClient
    core: Any
    a: Side
    b: Side
    admin: dict[str, str]


async def _side(core: Any, label: str) -> Side:
    tenant = await core.tenancy.create_tenant(f"tenant-{label}-corp")
    project = await core.tenancy.create_project(tenant.uuid, f"project-{label}-blue")
    operator = await core.access.create_key(f"op-{label}", "operator", project.uuid)
    worker = await core.access.create_key(f"wk-{label}", "worker", project.uuid)
    assert operator.project_id == project.id and worker.project_uuid == project.uuid
    return Side(bearer(operator.secret), bearer(worker.secret), tenant.uuid, project.uuid, project.id)


async def _seed(client: httpx.AsyncClient, side: Side, label: str) -> None:
    """A task, a queued run of it, a registered worker, and an external tracked run, all in `side`."""
    task = f"task-{label}-payroll"
    created = await client.post("/api/tasks", headers=side.operator, json={
        "name": task, "task_type": "shell", "command": f"echo {label}-command-secret",
        "description": f"desc-{label}-hidden"})
    assert created.status_code == 201, created.text
    side.task_id = created.json()["data"]["id"]
    triggered = await client.post(f"/api/tasks/{side.task_id}/trigger", headers=side.operator)
    assert triggered.status_code == 200, triggered.text
    side.run_id = triggered.json()["data"]["run_id"]
    side.worker_id = f"wrk-{label}"
    registered = await client.post("/api/workers", headers=side.worker, json={
        "id": side.worker_id, "hostname": f"host-{label}-rack", "ip_address": "10.0.0.1", "port": 9000,
        "task_types": ["python"]})  # python only: it does not claim the shell run until a test says so
    assert registered.status_code == 201, registered.text
    side.external_run = f"ext-{label}-run"
    tracked = await client.post("/api/tracking/event", headers=side.operator, json={
        "runId": side.external_run, "functionName": f"fn-{label}-ledger", "eventName": "start"})
    assert tracked.status_code == 200, tracked.text
    side.secrets = (task, f"{label}-command-secret", f"desc-{label}-hidden", f"host-{label}-rack",
                    f"fn-{label}-ledger", f"tenant-{label}-corp", f"project-{label}-blue", side.project_uuid,
                    side.tenant_uuid)


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    ctx = app_with(server_settings(database_url))
    async with ctx as client:
        core = ctx.app.state.core
        a, b = await _side(core, "alpha"), await _side(core, "bravo")
        admin = bearer((await core.access.create_key("root", "admin")).secret)
        await _seed(client, a, "alpha")
        await _seed(client, b, "bravo")
        yield World(client, core, a, b, admin)


# (method, path template, body, whose key of project B asks). {task}, {run}, {worker}, {ext} are project A's.
ROUTES: list[tuple[str, str, Any, str]] = [
    ("GET", "/api/tasks/{task}", None, "operator"),
    ("PUT", "/api/tasks/{task}", {"description": "changed"}, "operator"),
    ("DELETE", "/api/tasks/{task}", None, "operator"),
    ("POST", "/api/tasks/{task}/trigger", {}, "operator"),
    ("POST", "/api/tasks/{task}/pause", None, "operator"),
    ("POST", "/api/tasks/{task}/resume", None, "operator"),
    ("GET", "/api/runs/{run}", None, "operator"),
    ("GET", "/api/runs/{run}/logs", None, "operator"),
    ("POST", "/api/runs/{run}/restart", None, "operator"),
    ("POST", "/api/runs/{run}/abort", None, "operator"),
    ("GET", "/api/workers/{worker}", None, "operator"),
    ("PUT", "/api/workers/{worker}", {"status": "draining"}, "operator"),
    ("DELETE", "/api/workers/{worker}", None, "worker"),
    ("POST", "/api/workers/{worker}/heartbeat", {"current_tasks": []}, "worker"),
    ("POST", "/api/workers/{worker}/poll", {"capacity": 1, "wait": 0}, "worker"),
    ("POST", "/api/workers/{worker}/report", {"reports": [{"run_id": 1, "attempt": 1, "outcome": "completed"}]},
     "worker"),
    # spec 1: a run by its tracking runId, by its decimal id and by its uuid
    ("GET", "/api/tracking/runs/{ext}/events", None, "operator"),
    ("GET", "/api/tracking/runs/{run}/events", None, "operator"),
    ("GET", "/api/tracking/runs/{run_uuid}/events", None, "worker"),
]


async def _run_uuid(world: World, side: Side) -> str:
    got = await world.client.get(f"/api/runs/{side.run_id}", headers=side.operator)
    assert got.status_code == 200, got.text
    return str(got.json()["data"]["uuid"])


def _path(template: str, **ids: Any) -> str:
    return template.format(**ids)


def _no_secrets(response: httpx.Response, side: Side) -> None:
    for secret in side.secrets:
        assert secret not in response.text, (secret, response.text)


def _normalised(response: httpx.Response, *ids: Any) -> Any:
    """The error body with request-specific bits (ids, request id, time, path) taken out."""
    body = response.json()
    text = str(body.get("error") if "error" in body and isinstance(body["error"], dict) else
               {k: v for k, v in body.items() if k not in {"timestamp", "path"}})
    for value in sorted((str(i) for i in ids), key=len, reverse=True):  # a uuid may hold a short id
        text = text.replace(value, "<id>")
    return text


@pytest.mark.parametrize(("method", "template", "body", "who"), ROUTES,
                         ids=[f"{m} {t}" for m, t, _, _ in ROUTES])
async def test_other_projects_objects_are_not_found(world: World, method: str, template: str, body: Any,
                                                   who: str) -> None:
    a, b, client = world.a, world.b, world.client
    headers = b.operator if who == "operator" else b.worker
    own_ids = {"task": b.task_id, "run": b.run_id, "worker": b.worker_id, "ext": b.external_run,
               "run_uuid": await _run_uuid(world, b)}
    a_ids = {"task": a.task_id, "run": a.run_id, "worker": a.worker_id, "ext": a.external_run,
             "run_uuid": await _run_uuid(world, a)}
    missing = {"task": MISSING_TASK, "run": MISSING_RUN, "worker": MISSING_WORKER, "ext": "never-seen-run",
               "run_uuid": "00000000-0000-4000-8000-000000000000"}
    if body is not None and "reports" in body:
        body = {"reports": [{**body["reports"][0], "run_id": a.run_id}]}

    crossed = await client.request(method, _path(template, **a_ids), headers=headers, json=body)
    assert crossed.status_code == 404, crossed.text
    _no_secrets(crossed, a)
    # Word for word what an id that never existed gets: nothing tells "elsewhere" from "nowhere".
    absent = await client.request(method, _path(template, **missing), headers=headers, json=body)
    assert absent.status_code == 404, absent.text
    assert _normalised(crossed, *a_ids.values()) == _normalised(absent, *missing.values())

    # ...while the same route works for B's own object (the 404 is the scope, not a broken route).
    own_body = body
    if body is not None and "reports" in body:
        own_body = {"reports": [{**body["reports"][0], "run_id": b.run_id}]}
    own = await client.request(method, _path(template, **own_ids), headers=headers, json=own_body)
    assert own.status_code != 404, own.text

    # A's objects are untouched.
    task = await client.get(f"/api/tasks/{a.task_id}", headers=a.operator)
    assert task.status_code == 200 and task.json()["data"]["status"] == "active"
    assert task.json()["data"]["description"] == "desc-alpha-hidden"
    run = await client.get(f"/api/runs/{a.run_id}", headers=a.operator)
    assert run.json()["data"]["state"] == "queued", run.text
    worker = await client.get(f"/api/workers/{a.worker_id}", headers=a.operator)
    assert worker.status_code == 200 and worker.json()["data"]["status"] == "active", worker.text


LISTS = ["/api/tasks", "/api/runs", "/api/workers", "/api/tracking/runs", "/api/system/stats",
         "/api/system/health", "/api/system/metrics"]


@pytest.mark.parametrize("path", LISTS)
async def test_lists_and_counts_stay_in_the_project(world: World, path: str) -> None:
    a, b, client = world.a, world.b, world.client
    for key in (b.operator, b.worker):
        response = await client.get(path, headers=key)
        assert response.status_code == 200, response.text
        _no_secrets(response, a)
        assert "bravo" in response.text or path.startswith("/api/system")
    if path == "/api/tasks":
        listed = (await client.get(path, headers=b.operator)).json()["data"]
        # B's task and the task B's tracking event created, nothing of A's
        assert {t["name"] for t in listed["items"]} == {"task-bravo-payroll", "fn-bravo-ledger"}
        assert listed["total"] == 2
    if path == "/api/runs":
        listed = (await client.get(path, headers=b.operator)).json()["data"]
        assert a.run_id not in [r["id"] for r in listed["items"]]
        # a filter naming A's task finds nothing, rather than A's runs
        filtered = await client.get(path, params={"task_id": a.task_id}, headers=b.operator)
        assert filtered.json()["data"]["items"] == []
    if path == "/api/workers":
        listed = (await client.get(path, headers=b.operator)).json()["data"]
        assert [w["id"] for w in listed["items"]] == [b.worker_id]
    if path == "/api/tracking/runs":
        listed = (await client.get(path, headers=b.operator)).json()
        assert a.external_run not in {r["runId"] for r in listed}
        assert b.external_run in {r["runId"] for r in listed}
    if path == "/api/system/stats":
        stats = (await client.get(path, headers=b.operator)).json()["data"]
        assert stats["tasks"]["total"] == 2  # B's task and B's external (tracked) task
        assert stats["workers"]["total"] == 1
        assert stats["task_runs"]["pending"] == 1  # A's queued run is not counted
        everything = (await client.get(path, headers=world.admin)).json()["data"]
        assert everything["tasks"]["total"] == 4 and everything["workers"]["total"] == 2
    if path == "/api/system/health":
        health = (await client.get(path, headers=b.operator)).json()["data"]["components"]
        assert health["message_queue"]["queue_size"] == 1
        assert health["scheduler"]["active_workers"] == 1
    if path == "/api/system/metrics":
        text = (await client.get(path, headers=b.operator)).text
        assert "scheduler_workers_total 1.0" in text
        assert "scheduler_workers_total 2.0" in (await client.get(path, headers=world.admin)).text


async def test_a_worker_claims_only_its_projects_runs(world: World) -> None:
    a, b, client = world.a, world.b, world.client
    for side in (a, b):  # let both workers take shell runs now
        again = await client.post("/api/workers", headers=side.worker, json={
            "id": side.worker_id, "hostname": "h", "ip_address": "10.0.0.1", "port": 9000,
            "task_types": ["shell"]})
        assert again.status_code == 201, again.text
    polled = await client.post(f"/api/workers/{b.worker_id}/poll", headers=b.worker, json={"capacity": 5, "wait": 0})
    assert [r["run_id"] for r in polled.json()["data"]["runs"]] == [b.run_id]
    empty = await client.post(f"/api/workers/{b.worker_id}/poll", headers=b.worker,
                              json={"capacity": 5, "wait": 0, "running": [b.run_id]})
    assert empty.json()["data"]["runs"] == []  # A's queued run stays A's
    # Even an admin credential polling for B's worker claims only B's project's runs.
    admin_poll = await client.post(f"/api/workers/{b.worker_id}/poll", headers=world.admin,
                                   json={"capacity": 5, "wait": 0, "running": [b.run_id]})
    assert admin_poll.json()["data"]["runs"] == []
    # A report from B's worker about A's run is "not found", not "someone else's attempt".
    reported = await client.post(f"/api/workers/{b.worker_id}/report", headers=b.worker, json={
        "reports": [{"run_id": a.run_id, "attempt": 1, "outcome": "completed"},
                    {"run_id": b.run_id, "attempt": 1, "outcome": "completed"}]})
    assert reported.status_code == 200, reported.text
    answer = reported.json()["data"]
    assert answer["accepted"] == [b.run_id]
    assert [(r["run_id"], r["code"]) for r in answer["rejected"]] == [(a.run_id, "RESOURCE_NOT_FOUND")]
    _no_secrets(reported, a)
    mine = await client.post(f"/api/workers/{a.worker_id}/poll", headers=a.worker, json={"capacity": 5, "wait": 0})
    assert [r["run_id"] for r in mine.json()["data"]["runs"]] == [a.run_id]


async def test_registering_another_projects_worker_id_is_refused(world: World) -> None:
    a, b, client = world.a, world.b, world.client
    taken = await client.post("/api/workers", headers=b.worker, json={
        "id": a.worker_id, "hostname": "intruder", "ip_address": "10.0.0.2", "port": 1, "task_types": ["shell"]})
    assert taken.status_code == 409, taken.text
    _no_secrets(taken, a)
    worker = (await client.get(f"/api/workers/{a.worker_id}", headers=a.operator)).json()["data"]
    assert worker["hostname"] == "host-alpha-rack"


async def test_dependencies_stay_in_the_project(world: World) -> None:
    a, b, client = world.a, world.b, world.client
    base = {"task_type": "shell", "command": "true"}
    refused = await client.post("/api/tasks", headers=b.operator,
                                json={**base, "name": "b2", "dependencies": [a.task_id]})
    assert refused.status_code == 422, refused.text
    _no_secrets(refused, a)
    by_name = await client.post("/api/tasks", headers=b.operator,
                                json={**base, "name": "b3", "dependencies": ["task-alpha-payroll"]})
    assert by_name.status_code == 422, by_name.text
    ok = await client.post("/api/tasks", headers=b.operator, json={**base, "name": "b4", "dependencies": [b.task_id]})
    assert ok.status_code == 201, ok.text
    changed = await client.put(f"/api/tasks/{b.task_id}", headers=b.operator, json={"dependencies": [a.task_id]})
    assert changed.status_code == 422, changed.text
    _no_secrets(changed, a)


async def test_writes_land_in_the_callers_project(world: World) -> None:
    a, b, client = world.a, world.b, world.client
    # A tracking event naming A's run id from B makes (or finds) B's own run of that name; A's run is untouched.
    sent = await client.post("/api/tracking/event", headers=b.operator, json={
        "runId": str(a.run_id), "functionName": "bravo-fn", "eventName": "end"})
    assert sent.status_code == 200, sent.text
    a_events = await client.get(f"/api/tracking/runs/{a.run_id}/events", headers=a.operator)
    assert a_events.status_code == 200 and a_events.json() == [], a_events.text
    b_runs = (await client.get("/api/tracking/runs", headers=b.operator)).json()
    assert str(a.run_id) in {r["runId"] for r in b_runs}
    # Restarting and triggering make runs in the task's project.
    restarted = await client.post(f"/api/runs/{b.run_id}/restart", headers=b.operator)
    assert restarted.status_code == 200, restarted.text
    new_run = restarted.json()["data"]["new_run_id"]
    assert (await client.get(f"/api/runs/{new_run}", headers=a.operator)).status_code == 404
    assert (await client.get(f"/api/runs/{new_run}", headers=b.operator)).status_code == 200
    async with world.core.db.read() as conn:
        from sqlalchemy import select

        from taskyard.storage.tables import runs, tasks, workers
        assert (await conn.execute(select(runs.c.project_id).where(runs.c.id == new_run))).scalar() == b.project_id
        assert (await conn.execute(select(tasks.c.project_id).where(tasks.c.id == a.task_id))).scalar() \
            == a.project_id
        assert (await conn.execute(select(workers.c.project_id).where(workers.c.id == b.worker_id))).scalar() \
            == b.project_id


async def test_an_admin_key_without_a_project_sees_both(world: World) -> None:
    a, b, client, admin = world.a, world.b, world.client, world.admin
    tasks = (await client.get("/api/tasks", headers=admin)).json()["data"]["items"]
    assert {a.task_id, b.task_id} <= {t["id"] for t in tasks}
    runs = (await client.get("/api/runs", headers=admin)).json()["data"]["items"]
    assert {a.run_id, b.run_id} <= {r["id"] for r in runs}
    workers = (await client.get("/api/workers", headers=admin)).json()["data"]["items"]
    assert {a.worker_id, b.worker_id} == {w["id"] for w in workers}
    for side in (a, b):
        assert (await client.get(f"/api/tasks/{side.task_id}", headers=admin)).status_code == 200
        assert (await client.get(f"/api/runs/{side.run_id}", headers=admin)).status_code == 200
        assert (await client.get(f"/api/workers/{side.worker_id}", headers=admin)).status_code == 200
    # ...and creates in the default project, where a project key sees nothing of it.
    created = await client.post("/api/tasks", headers=admin, json={"name": "admin-t", "task_type": "shell",
                                                                   "command": "true"})
    assert created.status_code == 201, created.text
    assert (await client.get(f"/api/tasks/{created.json()['data']['id']}", headers=b.operator)).status_code == 404


async def test_scoped_admin_key_acts_in_its_project_only(world: World) -> None:
    a, b, client = world.a, world.b, world.client
    scoped = bearer((await world.core.access.create_key("b-admin", "admin", b.project_uuid)).secret)
    assert (await client.get(f"/api/tasks/{a.task_id}", headers=scoped)).status_code == 404
    listed = (await client.get("/api/tasks", headers=scoped)).json()["data"]["items"]
    assert {t["name"] for t in listed} == {"task-bravo-payroll", "fn-bravo-ledger"}


async def test_keys_without_a_project_act_in_the_default_project(world: World) -> None:
    key = await world.core.access.create_key("plain", "operator")
    assert key.project_id == 1
    headers = bearer(key.secret)
    assert (await world.client.get(f"/api/tasks/{world.a.task_id}", headers=headers)).status_code == 404
    assert (await world.client.get("/api/tasks", headers=headers)).json()["data"]["items"] == []
    with pytest.raises(ValidationFailed):
        await world.core.access.create_key("bad", "operator", "00000000-0000-4000-8000-000000000000")


async def test_jwt_tenant_and_project_claims(database_url: str) -> None:
    ctx = app_with(server_settings(database_url, jwt_secret=JWT_SECRET))
    async with ctx as client:
        core = ctx.app.state.core
        a, b = await _side(core, "alpha"), await _side(core, "bravo")
        await _seed(client, a, "alpha")
        await _seed(client, b, "bravo")

        def token(**claims: Any) -> dict[str, str]:
            body = {"sub": "someone", "aud": "taskyard", "exp": 2_000_000_000, "role": "operator", **claims}
            return bearer(jwt.encode(body, JWT_SECRET, algorithm="HS256"))

        in_b = token(tenant=b.tenant_uuid, project=b.project_uuid)
        assert (await client.get(f"/api/tasks/{b.task_id}", headers=in_b)).status_code == 200
        crossed = await client.get(f"/api/tasks/{a.task_id}", headers=in_b)
        assert crossed.status_code == 404
        _no_secrets(crossed, a)
        assert (await client.get(f"/api/tasks/{b.task_id}", headers=token(project=b.project_uuid))).status_code == 200
        for bad in (token(project="00000000-0000-4000-8000-000000000000"), token(project="not-a-guid"),
                    token(tenant=a.tenant_uuid, project=b.project_uuid), token(tenant=b.tenant_uuid),
                    token(project=7)):
            refused = await client.get("/api/tasks", headers=bad)
            assert refused.status_code == 401, refused.text
            _no_secrets(refused, a)
        # No project claim: operators act in the default project, admins see every project.
        assert (await client.get("/api/tasks", headers=token())).json()["data"]["items"] == []
        everything = (await client.get("/api/tasks", headers=token(role="admin"))).json()["data"]["items"]
        assert {a.task_id, b.task_id} <= {t["id"] for t in everything}


async def test_auth_off_acts_in_the_default_project(database_url: str) -> None:
    ctx = app_with(server_settings(database_url, auth=False))
    async with ctx as client:
        core = ctx.app.state.core
        tenant = await core.tenancy.create_tenant("other")
        project = await core.tenancy.create_project(tenant.uuid, "p")
        from taskyard.services.scope import Scope
        from taskyard.services.tasks import TaskSpec

        elsewhere = await core.tasks.create(TaskSpec(name="elsewhere", task_type="shell", command="true"),
                                            scope=Scope(project.id))
        assert (await client.get(f"/api/tasks/{elsewhere.id}")).status_code == 404
        assert (await client.get("/api/tasks")).json()["data"]["items"] == []
        created = await client.post("/api/tasks", json={"name": "here", "task_type": "shell", "command": "true"})
        assert created.status_code == 201, created.text


async def test_tracking_a_function_named_like_another_projects_task(world: World) -> None:
    a, b, client = world.a, world.b, world.client
    sent = await client.post("/api/tracking/event", headers=b.operator, json={
        "runId": "b-ext-2", "functionName": "task-alpha-payroll", "eventName": "start"})
    assert sent.status_code == 200, sent.text
    b_runs = (await client.get("/api/runs", headers=b.operator)).json()["data"]["items"]
    assert a.task_id not in {r["task_id"] for r in b_runs}  # B's run must not hang off A's task

