"""Page-number lists over any SELECT, with a total.

The total is either handed in by the caller, exact (the run list takes it from the tallies), or counted;
a count may stop at `count_limit` matching rows, and the page then says its total is only a lower bound.
Counting every match of a filter over a million runs cost more than reading the page itself.

With an exact total, a page past the middle is read from the other end, in the opposite order, and turned
around: the last page of a million runs costs what the first one does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, func, literal_column, select
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
    exact: bool = True  # False: at least `total` rows match, and counting stopped there


async def fetch_page(conn: AsyncConnection, query: Select[Any], sort_column: ColumnElement[Any],
                     tiebreak: ColumnElement[Any] | Sequence[ColumnElement[Any]], request: PageRequest, *,
                     total: int | None = None, count_limit: int | None = None) -> Page:
    """`tiebreak`: the column (or columns) ordering rows with equal sort values, in the same direction."""
    exact = True
    if total is None:
        total, exact = await count(conn, query, count_limit)
    offset, size = request.offset, request.size
    if exact and offset >= total:
        return Page([], total)
    order = [sort_column, *([tiebreak] if isinstance(tiebreak, ColumnElement) else tiebreak)]
    descending = request.order != "asc"
    after = total - offset - size  # rows after this page
    flip = exact and after < offset
    if flip:
        descending, offset, size = not descending, max(0, after), min(size, total - offset)
    ordered = query.order_by(*(c.desc() if descending else c.asc() for c in order))
    rows = [dict(r) for r in (await conn.execute(ordered.limit(size).offset(offset))).mappings().all()]
    return Page(rows=rows[::-1] if flip else rows, total=total, exact=exact)


async def count(conn: AsyncConnection, query: Select[Any], limit: int | None = None) -> tuple[int, bool]:
    """How many rows `query` selects, and whether that is all of them (False: more than `limit`)."""
    matching: Select[Any] = query.order_by(None).with_only_columns(literal_column("1"),
                                                                    maintain_column_froms=True)
    if limit is not None:
        matching = matching.limit(limit + 1)
    found = int((await conn.execute(select(func.count()).select_from(matching.subquery()))).scalar_one())
    if limit is not None and found > limit:
        return limit, False
    return found, True
