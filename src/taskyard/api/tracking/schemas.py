"""Request bodies of the tracking API: camelCase, and unknown fields are ignored (outside code may send
extras). Field rules (required, non-empty, length) are the service's, so every dialect gets them.

The bodies are read by hand from orjson's parse rather than by a pydantic model: at ten thousand
events per request, model validation cost more than storing the events. The models below describe the
same bodies for the OpenAPI document, and errors come out as FastAPI's validation errors would, so the
error handler shapes them like any other.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from taskyard.api.scheduler.schemas import _storable
from taskyard.services.tracking import MAX_BATCH, TrackingEvent

Loc = tuple[str | int, ...]
_INSTANT = TypeAdapter(datetime)


class EventBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    run_id: str | int = Field(alias="runId")
    function_name: str = Field(alias="functionName")
    event_name: str = Field(alias="eventName")
    data: Any = None
    timestamp: datetime | None = None


class BatchBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    events: list[EventBody] = Field(max_length=MAX_BATCH)


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` that documents `model` as the JSON request body of a route that reads it by hand."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def event_of(body: bytes) -> TrackingEvent:
    """The body of POST /api/tracking/event."""
    document = _document(body)
    return _event(document, ("body",))


def events_of(body: bytes) -> list[TrackingEvent]:
    """The body of POST /api/tracking/batch: `{"events": [...]}`."""
    document = _document(body)
    events = document.get("events")
    if events is None:
        raise _invalid("missing", ("body", "events"), "Field required", None)
    if not isinstance(events, list):
        raise _invalid("list_type", ("body", "events"), "Input should be a valid list", None)
    if len(events) > MAX_BATCH:
        raise _invalid("too_long", ("body", "events"),
                       f"List should have at most {MAX_BATCH} items after validation, not {len(events)}", None)
    return [_event(item, ("body", "events", index)) for index, item in enumerate(events)]


def _document(body: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _invalid("json_invalid", ("body",), "JSON decode error", None) from None
    if not isinstance(document, dict):
        raise _invalid("model_attributes_type", ("body",), "Input should be a valid JSON object", None)
    # orjson refuses lone surrogates and non-finite numbers itself; an escaped NUL is the one thing left
    # that the databases cannot store, and it can only come in as the six bytes of its escape.
    if b"\\u0000" in body:
        try:
            _storable(document)
        except ValueError as exc:
            raise _invalid("value_error", ("body",), f"Value error, {exc}", None) from None
    return document


def _event(item: Any, loc: Loc) -> TrackingEvent:
    if not isinstance(item, dict):
        raise _invalid("dict_type", loc, "Input should be a valid JSON object", None)
    run_id = item.get("runId")
    # A run id sent as a JSON number (TASKYARD_RUN_ID parsed by the caller) is the same id.
    if isinstance(run_id, int) and not isinstance(run_id, bool):
        run_id = str(run_id)
    return TrackingEvent(run_id=run_id, function_name=item.get("functionName"),  # type: ignore[arg-type]
                         event_name=item.get("eventName"),  # type: ignore[arg-type]
                         data=item.get("data"), timestamp=_timestamp(item.get("timestamp"), (*loc, "timestamp")))


def _timestamp(value: Any, loc: Loc) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass  # the forms only pydantic reads (and the errors it words) below
    try:
        return _INSTANT.validate_python(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise _invalid(str(error["type"]), loc, str(error["msg"]), value) from None


def _invalid(kind: str, loc: Loc, message: str, value: Any) -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": loc, "msg": message, "input": value}])
