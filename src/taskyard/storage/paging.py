"""Page-number lists over any SELECT, with a total."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True)
class PageRequest:
    page: int = 1
    size: int = 20
    sort: str = "created_at"
    order: str = "desc"

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    total: int


async def fetch_page(conn: AsyncConnection, query: Select[Any], sort_column: ColumnElement[Any],
                     tiebreak: ColumnElement[Any], request: PageRequest) -> Page:
    total = (await conn.execute(select(func.count()).select_from(query.order_by(None).subquery()))).scalar_one()
    if request.order == "asc":
        ordered = query.order_by(sort_column.asc(), tiebreak.asc())
    else:
        ordered = query.order_by(sort_column.desc(), tiebreak.desc())
    rows = (await conn.execute(ordered.limit(request.size).offset(request.offset))).mappings().all()
    return Page(rows=[dict(r) for r in rows], total=int(total))
