"""Use cases on tenants and the projects inside them. Callers name both by their public uuid."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from taskyard.domain.errors import Conflict, NotFound, ValidationFailed
from taskyard.services.scope import UNSCOPED, Scope
from taskyard.storage import tenancy as rows
from taskyard.storage.paging import PageRequest
from taskyard.storage.tenancy import Project, Tenant

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from taskyard.services.core import Core

__all__ = ["Project", "TenancyService", "Tenant"]

NAME_MAX = 255


def clean_name(name: object) -> str:
    """A name trimmed of surrounding white space, 1 to 255 characters, no NUL."""
    if not isinstance(name, str):
        raise ValidationFailed("name must be text", field="name", rule="type", value=name)
    trimmed = name.strip()
    if not trimmed:
        raise ValidationFailed("name must not be empty", field="name", rule="min_length", value=name)
    if len(trimmed) > NAME_MAX:
        raise ValidationFailed(f"name must be at most {NAME_MAX} characters", field="name", rule="max_length",
                               value=trimmed[:32] + "...")
    if "\x00" in trimmed:
        raise ValidationFailed("name must not contain NUL characters", field="name", rule="no_nul")
    return trimmed


def _canonical_uuid(value: str) -> str | None:
    """The stored spelling of a GUID, or None when `value` is not one (which reads as 'not found')."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        return None


def _check_sort(page: PageRequest, noun: str) -> None:
    if page.sort not in rows.SORTABLE:
        raise ValidationFailed(f"cannot sort {noun} by '{page.sort}'", field="sort", rule="one_of", value=page.sort)


class TenancyService:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def create_tenant(self, name: str) -> Tenant:
        name = clean_name(name)
        async with self.core.db.write() as conn:
            if await rows.tenant_name_taken(conn, name):
                raise Conflict(f"a tenant named '{name}' already exists", field="name", value=name)
            tenant = await rows.insert_tenant(conn, {"uuid": str(uuid.uuid4()), "name": name,
                                                     "created_at": self.core.clock()})
        if tenant is None:
            raise Conflict(f"a tenant named '{name}' already exists", field="name", value=name)
        return tenant

    async def list_tenants(self, page: PageRequest | None = None, *, scope: Scope = UNSCOPED,
                           ) -> tuple[list[Tenant], int]:
        """Every tenant; a scope with a project sees only that project's tenant."""
        page = page or PageRequest(sort="created_at", order="asc", size=self.core.config.page_size_max)
        _check_sort(page, "tenants")
        async with self.core.db.read() as conn:
            if scope.everything:
                return await rows.list_tenants(conn, page)
            home = await self._home(conn, scope)
            return await rows.list_tenants(conn, page, only_id=home.tenant_id if home else -1)

    async def get_tenant(self, tenant_uuid: str) -> Tenant:
        async with self.core.db.read() as conn:
            return await self._tenant(conn, tenant_uuid)

    async def create_project(self, tenant_uuid: str, name: str) -> Project:
        name = clean_name(name)
        async with self.core.db.write() as conn:
            tenant = await self._tenant(conn, tenant_uuid)
            if await rows.project_name_taken(conn, tenant.id, name):
                raise Conflict(f"tenant '{tenant.name}' already has a project named '{name}'", field="name",
                               value=name)
            project = await rows.insert_project(conn, {"uuid": str(uuid.uuid4()), "tenant_id": tenant.id,
                                                       "name": name, "created_at": self.core.clock()})
        if project is None:
            raise Conflict(f"tenant '{tenant.name}' already has a project named '{name}'", field="name", value=name)
        return project

    async def list_projects(self, tenant_uuid: str, page: PageRequest | None = None, *,
                            scope: Scope = UNSCOPED) -> tuple[list[Project], int]:
        """The tenant's projects; a scope with a project sees only that project, and any other tenant
        answers the same NotFound as one that does not exist."""
        page = page or PageRequest(sort="created_at", order="asc", size=self.core.config.page_size_max)
        _check_sort(page, "projects")
        async with self.core.db.read() as conn:
            tenant = await self._tenant(conn, tenant_uuid)
            if scope.everything:
                return await rows.list_projects(conn, tenant.id, page)
            home = await self._home(conn, scope)
            if home is None or home.tenant_id != tenant.id:
                raise NotFound("tenant not found")
            return await rows.list_projects(conn, tenant.id, page, only_id=home.id)

    async def get_project(self, tenant_uuid: str, project_uuid: str) -> Project:
        """NotFound unless the project exists and belongs to that tenant."""
        async with self.core.db.read() as conn:
            tenant = await self._tenant(conn, tenant_uuid)
            wanted = _canonical_uuid(project_uuid)
            project = await rows.project_in_tenant(conn, tenant.id, wanted) if wanted else None
        if project is None:
            raise NotFound("project not found in this tenant")
        return project

    async def find_project(self, project_uuid: str, *, tenant_uuid: str | None = None) -> Project:
        """A project by its GUID alone (and, when `tenant_uuid` is given, only inside that tenant)."""
        wanted = _canonical_uuid(project_uuid)
        async with self.core.db.read() as conn:
            project = await rows.project_by_uuid(conn, wanted) if wanted else None
        if project is None or (tenant_uuid is not None and project.tenant_uuid != _canonical_uuid(tenant_uuid)):
            raise NotFound("project not found")
        return project

    @staticmethod
    async def _home(conn: AsyncConnection, scope: Scope) -> Project | None:
        """The project a scoped caller acts in (None if it has gone: then the caller sees no tenant)."""
        return await rows.project_by_id(conn, scope.project_id) if scope.project_id is not None else None

    @staticmethod
    async def _tenant(conn: AsyncConnection, tenant_uuid: str) -> Tenant:
        wanted = _canonical_uuid(tenant_uuid)
        tenant = await rows.tenant_by_uuid(conn, wanted) if wanted else None
        if tenant is None:
            raise NotFound("tenant not found")
        return tenant
