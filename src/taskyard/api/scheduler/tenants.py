"""/api/tenants: tenants and their projects. The public id of both is a GUID; a malformed one is a 404.

Reads show a credential scoped to a project only its own tenant and project; another tenant is a 404."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import StrictStr
from starlette.responses import Response

from taskyard.api.envelope import ok
from taskyard.api.scheduler import shapes
from taskyard.api.scheduler.common import Paging, Services, idempotent
from taskyard.api.scheduler.schemas import _Body
from taskyard.api.security import Scoped, allow
from taskyard.services.access import Permission, Principal
from taskyard.services.scope import UNSCOPED, Scope
from taskyard.services.tenancy import Project, Tenant

router = APIRouter(prefix="/tenants", tags=["tenants"])
read = [Depends(allow(Permission.READ))]
admin = [Depends(allow(Permission.ADMIN))]

# No pattern or length here: anything that is not a known tenant's GUID gets the same 404.
TenantId = Annotated[str, Path(description="tenant id (a GUID)")]


async def visible_scope(request: Request, scope: Scoped) -> Scope:
    """What the caller may list: the credential's scope (an admin without a project sees every tenant).
    With auth off the anonymous principal acts in the default project elsewhere, but a single-user server
    has nobody to hide tenants from, so it sees them all."""
    principal: Principal = request.state.principal
    return UNSCOPED if principal.kind == "anonymous" else scope


Visible = Annotated[Scope, Depends(visible_scope)]


class NameBody(_Body):
    name: StrictStr  # trimmed and checked (1 to 255 characters) by the service


def tenant_out(tenant: Tenant) -> dict[str, Any]:
    return {"id": tenant.uuid, "name": tenant.name, "created_at": tenant.created_at}


def project_out(project: Project) -> dict[str, Any]:
    return {"id": project.uuid, "tenant_id": project.tenant_uuid, "name": project.name,
            "created_at": project.created_at}


@router.get("", dependencies=read)
async def list_tenants(request: Request, core: Services, paging: Paging, scope: Visible) -> Response:
    tenants, total = await core.tenancy.list_tenants(paging, scope=scope)
    return ok(request, shapes.page([tenant_out(t) for t in tenants], total, paging.page, paging.size))


@router.post("", status_code=201, dependencies=admin)
async def create_tenant(request: Request, body: NameBody, core: Services) -> Response:
    async def produce() -> Response:
        return ok(request, tenant_out(await core.tenancy.create_tenant(body.name)), 201)

    return await idempotent(request, produce)


@router.get("/{tenant_id}/projects", dependencies=read)
async def list_projects(request: Request, tenant_id: TenantId, core: Services, paging: Paging,
                        scope: Visible) -> Response:
    projects, total = await core.tenancy.list_projects(tenant_id, paging, scope=scope)
    return ok(request, shapes.page([project_out(p) for p in projects], total, paging.page, paging.size))


@router.post("/{tenant_id}/projects", status_code=201, dependencies=admin)
async def create_project(request: Request, tenant_id: TenantId, body: NameBody, core: Services) -> Response:
    async def produce() -> Response:
        return ok(request, project_out(await core.tenancy.create_project(tenant_id, body.name)), 201)

    return await idempotent(request, produce)
