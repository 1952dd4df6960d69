"""Request bodies of the tracking API: camelCase, and unknown fields are ignored (outside code may send
extras). Field rules (required, non-empty, length) are the service's, so every dialect gets them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from taskyard.api.scheduler.schemas import _storable
from taskyard.services.tracking import MAX_BATCH, TrackingEvent


class EventBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    run_id: Any = Field(None, alias="runId")
    function_name: Any = Field(None, alias="functionName")
    event_name: Any = Field(None, alias="eventName")
    data: Any = None
    timestamp: datetime | None = None

    @field_validator("run_id", "function_name", "event_name", "data", mode="after")
    @classmethod
    def _storable_values(cls, value: Any) -> Any:
        return _storable(value)

    def event(self) -> TrackingEvent:
        # A run id sent as a JSON number (TASKYARD_RUN_ID parsed by the caller) is the same id.
        run_id = str(self.run_id) if isinstance(self.run_id, int) and not isinstance(self.run_id, bool) \
            else self.run_id
        return TrackingEvent(run_id=run_id, function_name=self.function_name, event_name=self.event_name,
                             data=self.data, timestamp=self.timestamp)


class BatchBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    events: list[EventBody] = Field(max_length=MAX_BATCH)
