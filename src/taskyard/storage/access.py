"""API keys (hashed) and idempotency records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from taskyard.storage.tables import api_keys, idempotency_keys


async def insert_key(conn: AsyncConnection, values: dict[str, Any]) -> int:
    return int((await conn.execute(insert(api_keys).values(**values).returning(api_keys.c.id))).scalar_one())


async def key_by_prefix(conn: AsyncConnection, prefix: str) -> dict[str, Any] | None:
    row = (await conn.execute(select(api_keys).where(api_keys.c.prefix == prefix))).mappings().first()
    return dict(row) if row else None


async def list_keys(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = (await conn.execute(select(api_keys).order_by(api_keys.c.id))).mappings().all()
    return [dict(r) for r in rows]


async def revoke_key(conn: AsyncConnection, key_id: int, at: datetime) -> bool:
    result = await conn.execute(update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                                .values(revoked_at=at))
    return bool(result.rowcount)


async def touch_key(conn: AsyncConnection, key_id: int, at: datetime) -> None:
    await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=at))


async def live_key_count(conn: AsyncConnection) -> int:
    rows = await conn.execute(select(api_keys.c.id).where(api_keys.c.revoked_at.is_(None)).limit(1))
    return len(rows.all())


async def reserve_idempotency(conn: AsyncConnection, scope: str, key: str, fingerprint: str,
                              at: datetime) -> dict[str, Any] | None:
    """Claim the key for this request. Returns the earlier record if the key was used before."""
    existing = (await conn.execute(select(idempotency_keys).where(
        idempotency_keys.c.scope == scope, idempotency_keys.c.key == key))).mappings().first()
    if existing is not None:
        return dict(existing)
    try:
        async with conn.begin_nested():
            await conn.execute(insert(idempotency_keys).values(scope=scope, key=key, fingerprint=fingerprint,
                                                               created_at=at))
    except IntegrityError:
        row = (await conn.execute(select(idempotency_keys).where(
            idempotency_keys.c.scope == scope, idempotency_keys.c.key == key))).mappings().first()
        return dict(row) if row else None
    return None


async def complete_idempotency(conn: AsyncConnection, scope: str, key: str, status_code: int, body: str) -> None:
    await conn.execute(update(idempotency_keys).where(idempotency_keys.c.scope == scope,
                                                      idempotency_keys.c.key == key)
                       .values(status_code=status_code, body=body))


async def forget_idempotency(conn: AsyncConnection, scope: str, key: str) -> None:
    await conn.execute(delete(idempotency_keys).where(idempotency_keys.c.scope == scope,
                                                      idempotency_keys.c.key == key))


async def purge_idempotency(conn: AsyncConnection, before: datetime) -> None:
    await conn.execute(delete(idempotency_keys).where(idempotency_keys.c.created_at < before))
