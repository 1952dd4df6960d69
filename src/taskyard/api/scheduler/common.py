"""Pieces every scheduler route shares: pages, path ids, idempotent replays."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Annotated

import orjson
from fastapi import Depends, Path, Query, Request
from starlette.responses import Response

from taskyard.api.envelope import dumps, metadata, request_id_of
from taskyard.domain.errors import ValidationFailed
from taskyard.services.core import Core
from taskyard.storage.paging import PageRequest

MAX_ID = 2**63 - 1
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL; refuse it at the edge
TaskId = Annotated[int, Path(ge=1, le=MAX_ID, description="task id")]
RunId = Annotated[int, Path(ge=1, le=MAX_ID, description="run id")]
WorkerId = Annotated[str, Path(min_length=1, max_length=255, pattern=NO_NUL, description="worker id")]


def core_of(request: Request) -> Core:
    core: Core = request.app.state.core
    return core


# Dependencies are coroutines even when they never await: FastAPI runs a plain function dependency in a
# worker thread, and the hop there and back (waiting for the GIL behind the event loop) cost a read
# more than its queries did.
async def _core(request: Request) -> Core:
    return core_of(request)


def paging(default_size: int = 20) -> Callable[..., Awaitable[PageRequest]]:
    async def dependency(request: Request,
                   page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
                   size: Annotated[int, Query(ge=1)] = default_size,
                   sort: Annotated[str, Query(max_length=64)] = "created_at",
                   order: Annotated[str, Query(pattern="^(?i)(asc|desc)$")] = "desc") -> PageRequest:
        limit = core_of(request).config.page_size_max
        if size > limit:
            raise ValidationFailed(f"size must be at most {limit}", field="size", rule="max", value=size)
        return PageRequest(page=page, size=size, sort=sort, order=order.lower())

    return dependency


Paging = Annotated[PageRequest, Depends(paging())]
Services = Annotated[Core, Depends(_core)]


async def idempotent(request: Request, produce: Callable[[], Awaitable[Response]]) -> Response:
    """With an Idempotency-Key header, the first answer is stored and replayed for repeats."""
    key = request.headers.get("idempotency-key")
    if not key:
        return await produce()
    core = core_of(request)
    principal = getattr(request.state, "principal", None)
    scope = f"{getattr(principal, 'subject', 'anonymous')}:{request.method}:{request.url.path}"
    fingerprint = hashlib.sha256(await request.body()).hexdigest()
    earlier = await core.access.begin_idempotent(scope, key, fingerprint)
    if earlier is not None:
        status, body = earlier
        # The first answer's data, with this request's metadata (its request_id matches X-Request-ID).
        replayed = {**orjson.loads(body), "metadata": metadata(request_id_of(request.scope))}
        return Response(dumps(replayed), status_code=status, media_type="application/json",
                        headers={"Idempotent-Replayed": "true"})
    try:
        response = await produce()
    except BaseException:
        await core.access.abandon_idempotent(scope, key)
        raise
    if response.status_code >= 500:
        await core.access.abandon_idempotent(scope, key)
    else:
        await core.access.finish_idempotent(scope, key, response.status_code, bytes(response.body).decode())
    return response
