"""/api/tenants and /api/tenants/{id}/projects on both databases: the default namespace, create and list,
conflicts, 404 for GUIDs that are unknown, malformed or under the wrong tenant, who may create, and what a
credential scoped to a project may see (its own tenant and project only)."""

from __future__ import annotations

import uuid
from datetime import datetime

import httpx
import pytest
from helpers import data, error

from conftest import app_with, server_settings
from taskyard.domain.errors import Conflict, NotFound, ValidationFailed
from taskyard.services.core import Core
from taskyard.services.scope import Scope


def _is_guid(value: str) -> bool:
    return str(uuid.UUID(value)) == value


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def _default_tenant(client: httpx.AsyncClient) -> dict[str, object]:
    tenants = data(await client.get("/api/tenants"))["items"]
    return next(t for t in tenants if t["name"] == "default")


async def test_fresh_database_has_the_default_tenant_and_project(app_client: httpx.AsyncClient) -> None:
    page = data(await app_client.get("/api/tenants"))
    assert page["total"] == 1 and page["page"] == 1
    [tenant] = page["items"]
    assert set(tenant) == {"id", "name", "created_at"}
    assert tenant["name"] == "default" and _is_guid(tenant["id"])
    _instant(tenant["created_at"])

    projects = data(await app_client.get(f"/api/tenants/{tenant['id']}/projects"))
    assert projects["total"] == 1
    [project] = projects["items"]
    assert set(project) == {"id", "tenant_id", "name", "created_at"}
    assert project["name"] == "default" and project["tenant_id"] == tenant["id"] and _is_guid(project["id"])


async def test_create_and_list(app_client: httpx.AsyncClient) -> None:
    acme = data(await app_client.post("/api/tenants", json={"name": "  acme  "}), 201)
    assert acme["name"] == "acme" and _is_guid(acme["id"])
    other = data(await app_client.post("/api/tenants", json={"name": "globex"}), 201)

    listed = data(await app_client.get("/api/tenants", params={"sort": "name", "order": "asc"}))
    assert [t["name"] for t in listed["items"]] == ["acme", "default", "globex"]
    assert listed["total"] == 3
    assert next(t for t in listed["items"] if t["name"] == "acme") == acme

    web = data(await app_client.post(f"/api/tenants/{acme['id']}/projects", json={"name": "web"}), 201)
    assert web["tenant_id"] == acme["id"] and web["name"] == "web" and _is_guid(web["id"])
    data(await app_client.post(f"/api/tenants/{acme['id']}/projects", json={"name": "batch"}), 201)
    # The same project name in another tenant is fine.
    data(await app_client.post(f"/api/tenants/{other['id']}/projects", json={"name": "web"}), 201)
    # An upper-case spelling of the GUID names the same tenant.
    data(await app_client.post(f"/api/tenants/{acme['id'].upper()}/projects", json={"name": "ml"}), 201)

    projects = data(await app_client.get(f"/api/tenants/{acme['id']}/projects",
                                         params={"sort": "name", "order": "asc"}))
    assert [p["name"] for p in projects["items"]] == ["batch", "ml", "web"]
    assert {p["tenant_id"] for p in projects["items"]} == {acme["id"]}
    assert data(await app_client.get(f"/api/tenants/{other['id']}/projects"))["total"] == 1

    paged = data(await app_client.get("/api/tenants", params={"size": 2, "page": 2, "sort": "name",
                                                              "order": "asc"}))
    assert [t["name"] for t in paged["items"]] == ["globex"] and paged["total_pages"] == 2
    error(await app_client.get("/api/tenants", params={"sort": "secret"}), 422, "VALIDATION_ERROR", "sort")


async def test_conflicts(app_client: httpx.AsyncClient) -> None:
    error(await app_client.post("/api/tenants", json={"name": "default"}), 409, "RESOURCE_CONFLICT", "name")
    acme = data(await app_client.post("/api/tenants", json={"name": "acme"}), 201)
    error(await app_client.post("/api/tenants", json={"name": " acme "}), 409, "RESOURCE_CONFLICT", "name")

    data(await app_client.post(f"/api/tenants/{acme['id']}/projects", json={"name": "web"}), 201)
    error(await app_client.post(f"/api/tenants/{acme['id']}/projects", json={"name": "web"}), 409,
          "RESOURCE_CONFLICT", "name")
    default = await _default_tenant(app_client)
    error(await app_client.post(f"/api/tenants/{default['id']}/projects", json={"name": "default"}), 409,
          "RESOURCE_CONFLICT", "name")


@pytest.mark.parametrize("name", ["", "   ", "x" * 256])
async def test_bad_names(app_client: httpx.AsyncClient, name: str) -> None:
    error(await app_client.post("/api/tenants", json={"name": name}), 422, "VALIDATION_ERROR", "name")
    default = await _default_tenant(app_client)
    error(await app_client.post(f"/api/tenants/{default['id']}/projects", json={"name": name}), 422,
          "VALIDATION_ERROR", "name")


async def test_body_is_checked(app_client: httpx.AsyncClient) -> None:
    error(await app_client.post("/api/tenants", json={}), 422, "VALIDATION_ERROR", "name")
    error(await app_client.post("/api/tenants", json={"name": 5}), 422, "VALIDATION_ERROR", "name")
    error(await app_client.post("/api/tenants", json={"name": "a\x00b"}), 422, "VALIDATION_ERROR", "name")
    error(await app_client.post("/api/tenants", json={"name": "a", "extra": 1}), 422, "VALIDATION_ERROR")
    data(await app_client.post("/api/tenants", json={"name": "x" * 255}), 201)


@pytest.mark.parametrize("tenant_id", [
    str(uuid.uuid4()), "not-a-guid", "1", "00000000-0000-0000-0000-00000000000", "%00", "x" * 300,
    "' OR 1=1 --",
])
async def test_unknown_or_malformed_tenant_is_404(app_client: httpx.AsyncClient, tenant_id: str) -> None:
    get = error(await app_client.get(f"/api/tenants/{tenant_id}/projects"), 404, "RESOURCE_NOT_FOUND")
    post = error(await app_client.post(f"/api/tenants/{tenant_id}/projects", json={"name": "p"}), 404,
                 "RESOURCE_NOT_FOUND")
    # The answer is the same whether the GUID is well formed or not.
    assert get["message"] == post["message"] == "tenant not found"
    assert get["details"] == {}


async def test_project_under_the_wrong_tenant_is_not_found(core: Core) -> None:
    acme = await core.tenancy.create_tenant("acme")
    globex = await core.tenancy.create_tenant("globex")
    web = await core.tenancy.create_project(acme.uuid, "web")

    found = await core.tenancy.get_project(acme.uuid, web.uuid)
    assert found == web and found.tenant_uuid == acme.uuid
    assert await core.tenancy.get_project(acme.uuid.upper(), web.uuid.upper()) == web
    with pytest.raises(NotFound):
        await core.tenancy.get_project(globex.uuid, web.uuid)
    with pytest.raises(NotFound):
        await core.tenancy.get_project(acme.uuid, str(uuid.uuid4()))
    with pytest.raises(NotFound):
        await core.tenancy.get_project(acme.uuid, "nope")
    with pytest.raises(NotFound):
        await core.tenancy.get_project("nope", web.uuid)
    with pytest.raises(NotFound):
        await core.tenancy.get_tenant(str(uuid.uuid4()))
    assert await core.tenancy.get_tenant(globex.uuid) == globex

    with pytest.raises(Conflict):
        await core.tenancy.create_tenant("acme")
    with pytest.raises(Conflict):
        await core.tenancy.create_project(acme.uuid, " web")
    with pytest.raises(ValidationFailed):
        await core.tenancy.create_tenant(" ")
    tenants, total = await core.tenancy.list_tenants()
    assert total == 3 and {t.name for t in tenants} == {"default", "acme", "globex"}
    projects, total = await core.tenancy.list_projects(globex.uuid)
    assert (projects, total) == ([], 0)


async def test_project_listing_does_not_leak_other_tenants(app_client: httpx.AsyncClient) -> None:
    acme = data(await app_client.post("/api/tenants", json={"name": "acme"}), 201)
    default = await _default_tenant(app_client)
    data(await app_client.post(f"/api/tenants/{acme['id']}/projects", json={"name": "secret"}), 201)
    names = [p["name"] for p in data(await app_client.get(f"/api/tenants/{default['id']}/projects"))["items"]]
    assert names == ["default"]


async def test_only_admins_create(database_url: str) -> None:
    ctx = app_with(server_settings(database_url))
    async with ctx as client:
        access = ctx.app.state.core.access
        admin = (await access.create_key("admin-key", "admin")).secret
        viewer = (await access.create_key("viewer-key", "viewer")).secret
        operator = (await access.create_key("operator-key", "operator")).secret

        def auth(secret: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {secret}"}

        error(await client.get("/api/tenants"), 401, "AUTHENTICATION_ERROR")
        tenants = data(await client.get("/api/tenants", headers=auth(viewer)))["items"]
        tenant_id = tenants[0]["id"]
        assert data(await client.get(f"/api/tenants/{tenant_id}/projects", headers=auth(viewer)))["total"] == 1

        for secret in (viewer, operator):
            error(await client.post("/api/tenants", json={"name": "nope"}, headers=auth(secret)), 403,
                  "AUTHORIZATION_ERROR")
            error(await client.post(f"/api/tenants/{tenant_id}/projects", json={"name": "nope"},
                                    headers=auth(secret)), 403, "AUTHORIZATION_ERROR")
        # Permission is checked before the tenant is looked up: a viewer learns nothing about GUIDs.
        error(await client.post(f"/api/tenants/{uuid.uuid4()}/projects", json={"name": "nope"},
                                headers=auth(viewer)), 403, "AUTHORIZATION_ERROR")

        created = data(await client.post("/api/tenants", json={"name": "acme"}, headers=auth(admin)), 201)
        data(await client.post(f"/api/tenants/{created['id']}/projects", json={"name": "web"},
                               headers=auth(admin)), 201)
        # The viewer key acts in the default project: it sees the default tenant only.
        listed = data(await client.get("/api/tenants", headers=auth(viewer)))
        assert [t["name"] for t in listed["items"]] == ["default"] and listed["total"] == 1
        error(await client.get(f"/api/tenants/{created['id']}/projects", headers=auth(viewer)), 404,
              "RESOURCE_NOT_FOUND")
        # An admin key without a project sees every tenant and every project.
        names = {t["name"] for t in data(await client.get("/api/tenants", headers=auth(admin)))["items"]}
        assert names == {"default", "acme"}
        web = data(await client.get(f"/api/tenants/{created['id']}/projects", headers=auth(admin)))["items"]
        assert [p["name"] for p in web] == ["web"]


async def test_create_is_idempotent_with_a_key(app_client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "tenant-acme"}
    first = data(await app_client.post("/api/tenants", json={"name": "acme"}, headers=headers), 201)
    again = await app_client.post("/api/tenants", json={"name": "acme"}, headers=headers)
    assert data(again, 201) == first and again.headers["idempotent-replayed"] == "true"


async def test_a_project_scoped_key_sees_only_its_tenant_and_project(database_url: str) -> None:
    ctx = app_with(server_settings(database_url))
    async with ctx as client:
        core: Core = ctx.app.state.core
        tenant_a = await core.tenancy.create_tenant("tenant-a-secret")
        project_a = await core.tenancy.create_project(tenant_a.uuid, "project-a-secret")
        tenant_b = await core.tenancy.create_tenant("tenant-b")
        project_b = await core.tenancy.create_project(tenant_b.uuid, "project-b")
        await core.tenancy.create_project(tenant_b.uuid, "project-b-sibling")
        b_viewer = _bearer((await core.access.create_key("b-viewer", "viewer", project_b.uuid)).secret)
        b_admin = _bearer((await core.access.create_key("b-admin", "admin", project_b.uuid)).secret)
        admin = _bearer((await core.access.create_key("admin", "admin")).secret)

        for headers in (b_viewer, b_admin):  # a project makes even an admin key see only its own
            listed = data(await client.get("/api/tenants", headers=headers))
            assert [t["id"] for t in listed["items"]] == [tenant_b.uuid] and listed["total"] == 1
            assert "secret" not in str(listed) and "default" not in str(listed)
            by_name = data(await client.get("/api/tenants", headers=headers, params={"sort": "name"}))
            assert [t["id"] for t in by_name["items"]] == [tenant_b.uuid]

            own = data(await client.get(f"/api/tenants/{tenant_b.uuid.upper()}/projects", headers=headers))
            assert [p["id"] for p in own["items"]] == [project_b.uuid] and own["total"] == 1

            # Tenant A (and the default tenant) answer exactly like a tenant that never existed.
            unknown = error(await client.get(f"/api/tenants/{uuid.uuid4()}/projects", headers=headers), 404,
                            "RESOURCE_NOT_FOUND")
            default = next(t for t in data(await client.get("/api/tenants", headers=admin))["items"]
                           if t["name"] == "default")
            for other in (tenant_a.uuid, default["id"]):
                crossed = error(await client.get(f"/api/tenants/{other}/projects", headers=headers), 404,
                                "RESOURCE_NOT_FOUND")
                assert crossed == unknown and crossed["message"] == "tenant not found"

        everything = data(await client.get("/api/tenants", headers=admin))
        assert {t["name"] for t in everything["items"]} == {"default", "tenant-a-secret", "tenant-b"}
        assert [p["id"] for p in data(await client.get(f"/api/tenants/{tenant_a.uuid}/projects",
                                                       headers=admin))["items"]] == [project_a.uuid]
        assert data(await client.get(f"/api/tenants/{tenant_b.uuid}/projects", headers=admin))["total"] == 2


async def test_service_scope_filters_tenants_and_projects(core: Core) -> None:
    acme = await core.tenancy.create_tenant("acme")
    web = await core.tenancy.create_project(acme.uuid, "web")
    await core.tenancy.create_project(acme.uuid, "batch")
    scope = Scope(web.id)

    tenants, total = await core.tenancy.list_tenants(scope=scope)
    assert ([t.uuid for t in tenants], total) == ([acme.uuid], 1)
    projects, total = await core.tenancy.list_projects(acme.uuid, scope=scope)
    assert (projects, total) == ([web], 1)
    default = next(t for t in (await core.tenancy.list_tenants())[0] if t.name == "default")
    with pytest.raises(NotFound, match="tenant not found"):
        await core.tenancy.list_projects(default.uuid, scope=scope)
    # Without a scope (internal callers, admins without a project): everything.
    assert (await core.tenancy.list_tenants())[1] == 2
    assert (await core.tenancy.list_projects(acme.uuid))[1] == 2
