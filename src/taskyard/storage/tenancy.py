"""Tenant and project rows. Both have an internal integer id and a public uuid."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from taskyard.storage.paging import PageRequest, fetch_page
from taskyard.storage.tables import projects, tenants

SORTABLE = {"created_at", "name"}


@dataclass(frozen=True)
class Tenant:
    id: int
    uuid: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class Project:
    id: int
    uuid: str
    tenant_id: int
    tenant_uuid: str
    name: str
    created_at: datetime


def _tenant(row: Any) -> Tenant:
    return Tenant(id=int(row["id"]), uuid=row["uuid"], name=row["name"], created_at=row["created_at"])


def _project(row: Any) -> Project:
    return Project(id=int(row["id"]), uuid=row["uuid"], tenant_id=int(row["tenant_id"]),
                   tenant_uuid=row["tenant_uuid"], name=row["name"], created_at=row["created_at"])


_projects_with_tenant = (
    select(*projects.c, tenants.c.uuid.label("tenant_uuid"))
    .select_from(projects.join(tenants, tenants.c.id == projects.c.tenant_id))
)


async def tenant_by_uuid(conn: AsyncConnection, tenant_uuid: str) -> Tenant | None:
    row = (await conn.execute(select(tenants).where(tenants.c.uuid == tenant_uuid))).mappings().first()
    return _tenant(row) if row else None


async def tenant_name_taken(conn: AsyncConnection, name: str) -> bool:
    return (await conn.execute(select(tenants.c.id).where(tenants.c.name == name))).first() is not None


async def insert_tenant(conn: AsyncConnection, values: dict[str, Any]) -> Tenant | None:
    """The new tenant, or None when a unique column (the name) collided with a concurrent insert."""
    try:
        async with conn.begin_nested():
            row = (await conn.execute(insert(tenants).values(**values).returning(*tenants.c))).mappings().one()
    except IntegrityError:
        return None
    return _tenant(row)


async def list_tenants(conn: AsyncConnection, page: PageRequest, *, only_id: int | None = None,
                       ) -> tuple[list[Tenant], int]:
    """Every tenant, or only the one with row id `only_id`."""
    query = select(tenants) if only_id is None else select(tenants).where(tenants.c.id == only_id)
    result = await fetch_page(conn, query, tenants.c[page.sort], tenants.c.id, page)
    return [_tenant(r) for r in result.rows], result.total


async def project_in_tenant(conn: AsyncConnection, tenant_id: int, project_uuid: str) -> Project | None:
    row = (await conn.execute(_projects_with_tenant.where(
        projects.c.tenant_id == tenant_id, projects.c.uuid == project_uuid))).mappings().first()
    return _project(row) if row else None


async def project_by_uuid(conn: AsyncConnection, project_uuid: str) -> Project | None:
    row = (await conn.execute(_projects_with_tenant.where(projects.c.uuid == project_uuid))).mappings().first()
    return _project(row) if row else None


async def project_by_id(conn: AsyncConnection, project_id: int) -> Project | None:
    row = (await conn.execute(_projects_with_tenant.where(projects.c.id == project_id))).mappings().first()
    return _project(row) if row else None


async def project_name_taken(conn: AsyncConnection, tenant_id: int, name: str) -> bool:
    row = (await conn.execute(select(projects.c.id).where(projects.c.tenant_id == tenant_id,
                                                          projects.c.name == name))).first()
    return row is not None


async def insert_project(conn: AsyncConnection, values: dict[str, Any]) -> Project | None:
    """The new project, or None when (tenant, name) collided with a concurrent insert."""
    try:
        async with conn.begin_nested():
            project_id = (await conn.execute(insert(projects).values(**values).returning(projects.c.id))).scalar_one()
    except IntegrityError:
        return None
    row = (await conn.execute(_projects_with_tenant.where(projects.c.id == project_id))).mappings().one()
    return _project(row)


async def list_projects(conn: AsyncConnection, tenant_id: int, page: PageRequest, *, only_id: int | None = None,
                        ) -> tuple[list[Project], int]:
    """The tenant's projects, or only the one with row id `only_id` (if it is the tenant's)."""
    query = _projects_with_tenant.where(projects.c.tenant_id == tenant_id)
    if only_id is not None:
        query = query.where(projects.c.id == only_id)
    result = await fetch_page(conn, query, projects.c[page.sort], projects.c.id, page)
    return [_project(r) for r in result.rows], result.total
