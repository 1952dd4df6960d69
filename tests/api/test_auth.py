"""Who may call, through the HTTP app: API keys, roles, JWTs, the rate limit, idempotent requests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from conftest import app_with
from taskyard.services.access import NewKey
from taskyard.settings import ServerSettings
from taskyard.storage.tables import api_keys

SECRET = "a-jwt-secret-of-at-least-32-bytes-long!!"
TASK = {"name": "t1", "task_type": "shell", "command": "echo hi"}
WORKER = {"hostname": "h1", "ip_address": "10.0.0.1", "port": 9000, "task_types": ["shell"], "id": "w1"}


def settings(database_url: str, **extra: Any) -> ServerSettings:
    return ServerSettings(database_url=database_url, rate_limit=0, **extra)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def new_key(client_ctx: Any, role: str, name: str | None = None) -> NewKey:
    return await client_ctx.app.state.core.access.create_key(name or f"{role}-key", role)


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    if status == 401:
        assert response.headers["www-authenticate"].lower().startswith("bearer")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
async def test_loopback_without_keys_is_open_until_a_key_exists(database_url: str, host: str) -> None:
    ctx = app_with(settings(database_url, host=host))
    async with ctx as client:
        assert (await client.get("/api/tasks")).status_code == 200
        created = await client.post("/api/tasks", json=TASK)
        assert created.status_code == 201, created.text

        admin = await new_key(ctx, "admin")
        assert admin.secret.startswith("ty_")
        assert_error(await client.get("/api/tasks"), 401, "AUTHENTICATION_ERROR")
        assert_error(await client.post("/api/tasks", json={**TASK, "name": "t2"}), 401, "AUTHENTICATION_ERROR")
        assert_error(await client.get("/api/tasks", headers=bearer("not-a-key")), 401, "AUTHENTICATION_ERROR")
        prefix = admin.secret.split("_")[1]
        assert_error(await client.get("/api/tasks", headers=bearer(f"ty_{prefix}_wrong-secret")), 401,
                     "AUTHENTICATION_ERROR")
        assert_error(await client.get("/api/tasks", headers={"Authorization": f"Basic {admin.secret}"}), 401,
                     "AUTHENTICATION_ERROR")

        assert (await client.get("/api/tasks", headers=bearer(admin.secret))).status_code == 200
        assert (await client.get("/api/tasks", params={"api_key": admin.secret})).status_code == 200
        assert (await client.get("/api/tasks", headers={"authorization": f"bearer {admin.secret}"})).status_code \
            == 200


async def test_revoked_key_is_refused(database_url: str) -> None:
    ctx = app_with(settings(database_url))
    async with ctx as client:
        keep = await new_key(ctx, "admin", "keep")
        gone = await new_key(ctx, "admin", "gone")
        assert (await client.get("/api/tasks", headers=bearer(gone.secret))).status_code == 200
        await ctx.app.state.core.access.revoke_key(gone.id)
        assert_error(await client.get("/api/tasks", headers=bearer(gone.secret)), 401, "AUTHENTICATION_ERROR")
        assert_error(await client.get("/api/tasks", params={"api_key": gone.secret}), 401, "AUTHENTICATION_ERROR")
        assert (await client.get("/api/tasks", headers=bearer(keep.secret))).status_code == 200


async def test_keys_are_stored_hashed(database_url: str) -> None:
    ctx = app_with(settings(database_url))
    async with ctx as client:
        key = await new_key(ctx, "operator")
        async with ctx.app.state.core.db.read() as conn:
            rows = (await conn.execute(select(api_keys))).mappings().all()
        assert len(rows) == 1
        stored = " ".join(str(v) for v in rows[0].values())
        assert key.secret not in stored
        assert key.secret.split("_")[2] not in stored
        assert rows[0]["key_hash"] != key.secret and len(rows[0]["key_hash"]) >= 64
        listed = await ctx.app.state.core.access.list_keys()
        assert all("key_hash" not in row for row in listed)
        assert (await client.get("/api/tasks", headers=bearer(key.secret))).status_code == 200


async def _register_poll_report(client: httpx.AsyncClient, headers: dict[str, str], run_id: int) -> None:
    registered = await client.post("/api/workers", json=WORKER, headers=headers)
    assert registered.status_code == 201, registered.text
    polled = await client.post("/api/workers/w1/poll", json={"capacity": 1, "wait": 0}, headers=headers)
    assert polled.status_code == 200, polled.text
    [run] = polled.json()["data"]["runs"]
    assert run["run_id"] == run_id and run["attempt"] == 1
    beat = await client.post("/api/workers/w1/heartbeat", json={"current_tasks": [run_id]}, headers=headers)
    assert beat.status_code == 200, beat.text
    reported = await client.post("/api/workers/w1/report", headers=headers, json={
        "reports": [{"run_id": run_id, "attempt": 1, "outcome": "completed"}]})
    assert reported.status_code == 200, reported.text
    assert reported.json()["data"]["accepted"] == [run_id]


async def test_roles(database_url: str) -> None:
    ctx = app_with(settings(database_url))
    async with ctx as client:
        keys = {role: bearer((await new_key(ctx, role)).secret) for role in ("admin", "operator", "viewer", "worker")}
        admin, operator, viewer, worker = keys["admin"], keys["operator"], keys["viewer"], keys["worker"]

        # viewer: reads only
        for path in ("/api/tasks", "/api/runs", "/api/workers", "/api/system/health"):
            assert (await client.get(path, headers=viewer)).status_code == 200, path
        assert_error(await client.post("/api/tasks", json=TASK, headers=viewer), 403, "AUTHORIZATION_ERROR")
        assert_error(await client.post("/api/workers", json=WORKER, headers=viewer), 403, "AUTHORIZATION_ERROR")

        # operator: creates and triggers, but does not speak the worker protocol
        created = await client.post("/api/tasks", json=TASK, headers=operator)
        assert created.status_code == 201, created.text
        task_id = created.json()["data"]["id"]
        assert_error(await client.post(f"/api/tasks/{task_id}/trigger", headers=viewer), 403, "AUTHORIZATION_ERROR")
        triggered = await client.post(f"/api/tasks/{task_id}/trigger", headers=operator)
        assert triggered.status_code == 200, triggered.text
        run_id = triggered.json()["data"]["run_id"]
        assert_error(await client.post("/api/workers", json=WORKER, headers=operator), 403, "AUTHORIZATION_ERROR")
        assert_error(await client.post("/api/workers/w1/poll", json={"wait": 0}, headers=operator), 403,
                     "AUTHORIZATION_ERROR")

        # worker: registers, polls, reports; reads; but cannot define or trigger tasks
        await _register_poll_report(client, worker, run_id)
        assert (await client.get("/api/tasks", headers=worker)).status_code == 200
        assert_error(await client.post("/api/tasks", json={**TASK, "name": "t2"}, headers=worker), 403,
                     "AUTHORIZATION_ERROR")
        assert_error(await client.post(f"/api/tasks/{task_id}/trigger", headers=worker), 403,
                     "AUTHORIZATION_ERROR")

        # admin: everything
        created = await client.post("/api/tasks", json={**TASK, "name": "t3"}, headers=admin)
        assert created.status_code == 201
        triggered = await client.post(f"/api/tasks/{created.json()['data']['id']}/trigger", headers=admin)
        assert triggered.status_code == 200
        await _register_poll_report(client, admin, triggered.json()["data"]["run_id"])
        run = await client.get(f"/api/runs/{run_id}", headers=admin)
        assert run.status_code == 200 and run.json()["data"]["status"] == "completed"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.internal"])
async def test_non_loopback_bind_requires_auth_without_keys(database_url: str, host: str) -> None:
    ctx = app_with(settings(database_url, host=host))
    async with ctx as client:
        assert_error(await client.get("/api/tasks"), 401, "AUTHENTICATION_ERROR")
        assert_error(await client.post("/api/tasks", json=TASK), 401, "AUTHENTICATION_ERROR")
        key = await new_key(ctx, "viewer")
        assert (await client.get("/api/tasks", headers=bearer(key.secret))).status_code == 200
        await ctx.app.state.core.access.revoke_key(key.id)  # no live keys left: still closed
        assert_error(await client.get("/api/tasks"), 401, "AUTHENTICATION_ERROR")


def _claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "role": "operator", "aud": "taskyard", "exp": int(time.time()) + 300, **extra}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_signed(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    """An HMAC-SHA256 token built by hand (PyJWT refuses to HMAC-sign with a PEM key)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


async def test_jwt_hs256(database_url: str) -> None:
    ctx = app_with(settings(database_url, jwt_secret=SECRET))
    async with ctx as client:
        # A JWT secret turns auth on even on loopback with no keys.
        assert_error(await client.get("/api/tasks"), 401, "AUTHENTICATION_ERROR")

        good = jwt.encode(_claims(), SECRET, algorithm="HS256")
        assert (await client.get("/api/tasks", headers=bearer(good))).status_code == 200
        assert (await client.post("/api/tasks", json=TASK, headers=bearer(good))).status_code == 201
        assert (await client.get("/api/tasks", params={"api_key": good})).status_code == 200
        viewer = jwt.encode(_claims(role="viewer"), SECRET, algorithm="HS256")
        assert_error(await client.post("/api/tasks", json={**TASK, "name": "t2"}, headers=bearer(viewer)), 403,
                     "AUTHORIZATION_ERROR")

        refused = {
            "expired": jwt.encode(_claims(exp=int(time.time()) - 60), SECRET, algorithm="HS256"),
            "wrong audience": jwt.encode(_claims(aud="someone-else"), SECRET, algorithm="HS256"),
            "no audience": jwt.encode({k: v for k, v in _claims().items() if k != "aud"}, SECRET, algorithm="HS256"),
            "no expiry": jwt.encode({k: v for k, v in _claims().items() if k != "exp"}, SECRET, algorithm="HS256"),
            "other secret": jwt.encode(_claims(), "another-secret-of-at-least-32-bytes!!", algorithm="HS256"),
            "alg none": jwt.encode(_claims(), None, algorithm="none"),
            "HS512": jwt.encode(_claims(), SECRET * 2, algorithm="HS512"),
            "unknown role": jwt.encode(_claims(role="root"), SECRET, algorithm="HS256"),
            "garbage": "aaa.bbb.ccc",
        }
        for why, token in refused.items():
            response = await client.get("/api/tasks", headers=bearer(token))
            assert response.status_code == 401, why
            assert_error(response, 401, "AUTHENTICATION_ERROR")


async def test_jwt_issuer_is_checked_when_configured(database_url: str) -> None:
    ctx = app_with(settings(database_url, jwt_secret=SECRET, jwt_issuer="https://idp.example"))
    async with ctx as client:
        good = jwt.encode(_claims(iss="https://idp.example"), SECRET, algorithm="HS256")
        assert (await client.get("/api/tasks", headers=bearer(good))).status_code == 200
        for claims in (_claims(iss="https://evil.example"), _claims()):
            token = jwt.encode(claims, SECRET, algorithm="HS256")
            assert_error(await client.get("/api/tasks", headers=bearer(token)), 401, "AUTHENTICATION_ERROR")


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[Any, str, Any]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return private, public_pem, stranger


async def test_jwt_rs256_and_algorithm_confusion(database_url: str, rsa_keys: tuple[Any, str, Any]) -> None:
    private, public_pem, stranger = rsa_keys
    ctx = app_with(settings(database_url, jwt_public_key=public_pem))
    async with ctx as client:
        good = jwt.encode(_claims(role="admin"), private, algorithm="RS256")
        assert (await client.get("/api/tasks", headers=bearer(good))).status_code == 200
        assert (await client.post("/api/tasks", json=TASK, headers=bearer(good))).status_code == 201

        refused = {
            # the public key is public: an HMAC over it must not be accepted
            "HS256 with the public key": _hand_signed({"alg": "HS256", "typ": "JWT"}, _claims(role="admin"),
                                                      public_pem.encode()),
            "other private key": jwt.encode(_claims(role="admin"), stranger, algorithm="RS256"),
            "expired": jwt.encode(_claims(exp=int(time.time()) - 60), private, algorithm="RS256"),
            "wrong audience": jwt.encode(_claims(aud="nope"), private, algorithm="RS256"),
            "alg none": jwt.encode(_claims(role="admin"), None, algorithm="none"),
        }
        for why, token in refused.items():
            response = await client.get("/api/tasks", headers=bearer(token))
            assert response.status_code == 401, why
            assert_error(response, 401, "AUTHENTICATION_ERROR")


async def test_rate_limit_per_credential(database_url: str) -> None:
    ctx = app_with(ServerSettings(database_url=database_url, rate_limit=2, rate_burst=3))
    async with ctx as client:
        first = bearer((await new_key(ctx, "admin", "first")).secret)
        second = bearer((await new_key(ctx, "admin", "second")).secret)
        for _ in range(3):
            assert (await client.get("/api/tasks", headers=first)).status_code == 200
        limited = await client.get("/api/tasks", headers=first)
        assert_error(limited, 429, "RATE_LIMITED")
        assert int(limited.headers["retry-after"]) >= 1
        assert (await client.get("/api/tasks", headers=second)).status_code == 200


async def test_rate_limit_without_auth_is_per_client(database_url: str) -> None:
    ctx = app_with(ServerSettings(database_url=database_url, rate_limit=2, rate_burst=3))
    async with ctx as client:
        statuses = [(await client.get("/api/tasks")).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]


async def test_idempotency_key_replays_the_first_answer(database_url: str) -> None:
    ctx = app_with(settings(database_url))
    async with ctx as client:
        headers = {"Idempotency-Key": "create-t1"}
        first = await client.post("/api/tasks", json=TASK, headers=headers)
        assert first.status_code == 201
        assert "idempotent-replayed" not in first.headers
        again = await client.post("/api/tasks", json=TASK, headers=headers)
        assert again.status_code == 201
        assert again.headers["idempotent-replayed"] == "true"
        # The first answer replayed: same status and data; the metadata is this request's own
        # (src/taskyard/api/scheduler/common.py: its request_id matches this X-Request-ID).
        assert again.json()["success"] is True
        assert again.json()["data"] == first.json()["data"]
        assert again.json()["metadata"]["request_id"] == again.headers["x-request-id"]
        assert (await client.get("/api/tasks")).json()["data"]["total"] == 1

        different = await client.post("/api/tasks", json={**TASK, "command": "echo other"}, headers=headers)
        assert_error(different, 409, "RESOURCE_CONFLICT")
        assert "idempotent-replayed" not in different.headers

        task_id = first.json()["data"]["id"]
        runs = [await client.post(f"/api/tasks/{task_id}/trigger", headers={"Idempotency-Key": "go-1"})
                for _ in range(3)]
        assert {r.json()["data"]["run_id"] for r in runs} == {runs[0].json()["data"]["run_id"]}
        assert [r.headers.get("idempotent-replayed") for r in runs] == [None, "true", "true"]
        assert (await client.get("/api/runs", params={"task_id": task_id})).json()["data"]["total"] == 1
        other = await client.post(f"/api/tasks/{task_id}/trigger", headers={"Idempotency-Key": "go-2"})
        assert other.json()["data"]["run_id"] != runs[0].json()["data"]["run_id"]


async def test_idempotency_keys_are_per_credential(database_url: str) -> None:
    ctx = app_with(settings(database_url))
    async with ctx as client:
        alice = bearer((await new_key(ctx, "operator", "alice")).secret)
        bob = bearer((await new_key(ctx, "operator", "bob")).secret)
        task_id = (await client.post("/api/tasks", json=TASK, headers=alice)).json()["data"]["id"]
        a = await client.post(f"/api/tasks/{task_id}/trigger", headers={**alice, "Idempotency-Key": "k"})
        b = await client.post(f"/api/tasks/{task_id}/trigger", headers={**bob, "Idempotency-Key": "k"})
        assert a.status_code == b.status_code == 200
        assert "idempotent-replayed" not in b.headers
        assert a.json()["data"]["run_id"] != b.json()["data"]["run_id"]
