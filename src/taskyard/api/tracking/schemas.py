"""Request bodies of the tracking API: camelCase, and unknown fields are ignored (outside code may send
extras). Field rules (required, non-empty, length) are the service's, so every dialect gets them.

The bodies are read by hand from orjson's parse rather than by a pydantic model: at ten thousand
events per request, model validation cost more than storing the events. The models below describe the
same bodies for the OpenAPI document, and errors come out as FastAPI's validation errors would, so the
error handler shapes them like any other.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from taskyard.api.scheduler.schemas import _printable, _storable
from taskyard.services.tracking import MAX_BATCH, TrackingEvent
from taskyard.services.tracking_lines import TrackingLog, TrackingSample

Loc = tuple[str | int, ...]
_INSTANT = TypeAdapter(datetime)


class EventBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    run_id: str | int = Field(alias="runId")
    function_name: str = Field(alias="functionName")
    event_name: str = Field(alias="eventName")
    data: Any = None
    timestamp: datetime | None = None


class LogBody(BaseModel):
    """A log line as printed or logged, of a run that exists (the worker sends what a run printed)."""

    model_config = ConfigDict(extra="ignore")

    run_id: str | int = Field(alias="runId")
    message: str = Field(max_length=65_536)
    level: str | None = None
    stream: str | None = Field(None, description="stdout, stderr or system from the worker; sdk when absent")
    attempt: int | None = None
    timestamp: datetime | None = None
    component: str | None = None
    stage: str | None = None
    details: dict[str, Any] | None = None


class SampleBody(BaseModel):
    """A measurement of a run that exists: `source` task (reported by its code) or worker (its process tree)."""

    model_config = ConfigDict(extra="ignore")

    run_id: str | int = Field(alias="runId")
    name: str
    value: float
    unit: str | None = None
    source: str | None = None
    timestamp: datetime | None = None


class BatchBody(BaseModel):
    """Events, log lines and samples together, each list optional; stored in one transaction."""

    model_config = ConfigDict(extra="ignore")

    events: list[EventBody] = Field(default_factory=list, max_length=MAX_BATCH)
    logs: list[LogBody] = Field(default_factory=list, max_length=MAX_BATCH)
    samples: list[SampleBody] = Field(default_factory=list, max_length=MAX_BATCH)


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` that documents `model` as the JSON request body of a route that reads it by hand
    (nested models inlined, since they are not among the document's components)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(definitions[ref.rsplit("/", 1)[1]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}


def event_of(body: bytes) -> TrackingEvent:
    """The body of POST /api/tracking/event."""
    return _event(_document(body), ("body",))


@dataclass(slots=True)
class Batch:
    events: list[TrackingEvent]
    logs: list[TrackingLog]
    samples: list[TrackingSample]


def batch_of(body: bytes) -> Batch:
    """The body of POST /api/tracking/batch: `{"events": [...], "logs": [...], "samples": [...]}`, each
    list optional but one of them given."""
    document = _document(body, sanitize_logs=True)
    if not any(key in document for key in ("events", "logs", "samples")):
        raise _invalid("missing", ("body", "events"), "Field required", None)
    return Batch(events=[_event(item, loc) for item, loc in _items(document, "events")],
                 logs=[_log(item, loc) for item, loc in _items(document, "logs")],
                 samples=[_sample(item, loc) for item, loc in _items(document, "samples")])


def _items(document: dict[str, Any], key: str) -> Iterator[tuple[dict[str, Any], Loc]]:
    items = document.get(key)
    if items is None:
        return
    if not isinstance(items, list):
        raise _invalid("list_type", ("body", key), "Input should be a valid list", None)
    if len(items) > MAX_BATCH:
        raise _invalid("too_long", ("body", key),
                       f"List should have at most {MAX_BATCH} items after validation, not {len(items)}", None)
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise _invalid("dict_type", ("body", key, index), "Input should be a valid JSON object", None)
        yield item, ("body", key, index)


def _document(body: bytes, *, sanitize_logs: bool = False) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _invalid("json_invalid", ("body",), "JSON decode error", None) from None
    if not isinstance(document, dict):
        raise _invalid("model_attributes_type", ("body",), "Input should be a valid JSON object", None)
    # orjson refuses lone surrogates and non-finite numbers itself; an escaped NUL is the one thing left
    # that the databases cannot store, and it can only come in as the six bytes of its escape.
    if b"\\u0000" in body:
        if sanitize_logs:
            _printable_messages(document.get("logs"))
        try:
            _storable(document)
        except ValueError as exc:
            raise _invalid("value_error", ("body",), f"Value error, {exc}", None) from None
    return document


def _printable_messages(logs: Any) -> None:
    """What a task printed is kept, not refused: a NUL in a log line's message becomes U+FFFD."""
    for item in logs if isinstance(logs, list) else ():
        if isinstance(item, dict) and isinstance(item.get("message"), str):
            item["message"] = _printable(item["message"])


def _run_id(value: Any) -> Any:
    # A run id sent as a JSON number (TASKYARD_RUN_ID parsed by the caller) is the same id.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _log(item: dict[str, Any], loc: Loc) -> TrackingLog:
    return TrackingLog(run_id=_run_id(item.get("runId")), message=item.get("message"),  # type: ignore[arg-type]
                       level=item.get("level"), stream=item.get("stream"), attempt=item.get("attempt"),
                       timestamp=_timestamp(item.get("timestamp"), (*loc, "timestamp")),
                       component=item.get("component"), stage=item.get("stage"), details=item.get("details"))


def _sample(item: dict[str, Any], loc: Loc) -> TrackingSample:
    return TrackingSample(run_id=_run_id(item.get("runId")), name=item.get("name"),  # type: ignore[arg-type]
                          value=item.get("value"), unit=item.get("unit"),  # type: ignore[arg-type]
                          source=item.get("source"), timestamp=_timestamp(item.get("timestamp"), (*loc, "timestamp")))


def _event(item: dict[str, Any], loc: Loc) -> TrackingEvent:
    return TrackingEvent(run_id=_run_id(item.get("runId")),  # type: ignore[arg-type]
                         function_name=item.get("functionName"),  # type: ignore[arg-type]
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
