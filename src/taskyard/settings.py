"""Typed settings, built at the entry points (never at import time).

Every field falls back to a `TASKYARD_<NAME>` environment variable; a bad value stops start-up with a
message naming the variable.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PositiveFloat = Annotated[float, Field(gt=0)]


class SettingsError(ValueError):
    """Settings that cannot be used, with a message for people."""


def describe_validation_error(exc: ValidationError, prefix: str = "TASKYARD_") -> str:
    parts = []
    for err in exc.errors():
        name = prefix + "_".join(str(p) for p in err["loc"]).upper()
        parts.append(f"{name}={err.get('input')!r}: {err['msg']}")
    return "invalid settings: " + "; ".join(parts)


class _Settings(BaseSettings):
    @classmethod
    def load(cls, **overrides: object) -> Self:
        """Flags given on the command line (None = not given) over TASKYARD_* variables over defaults."""
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
        except ValidationError as exc:
            raise SettingsError(describe_validation_error(exc)) from exc


class ServerSettings(_Settings):
    """Settings of the API server and its scheduler loops."""

    model_config = SettingsConfigDict(env_prefix="TASKYARD_", extra="ignore")

    home: Path = Path(".taskyard")
    database_url: str | None = None
    # PostgreSQL connections each server keeps open. They are not opened and closed with the load: a
    # connection opened for a burst costs a backend start and plans every statement afresh.
    database_pool_size: int = Field(20, ge=1, le=500)
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)

    lease_seconds: PositiveFloat = 15.0
    reaper_interval: PositiveFloat = 2.0
    scheduler_interval: PositiveFloat = 1.0
    poll_wait_max: PositiveFloat = 30.0
    retention_days: float = Field(30.0, ge=0)  # 0 keeps tracking events, log lines and samples forever
    retention_interval: PositiveFloat = 3600.0

    auth: bool | None = None  # None: required on non-loopback binds, else on once keys exist
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_audience: str = "taskyard"
    jwt_issuer: str | None = None
    rate_limit: float = Field(1000.0, ge=0)  # requests per second per credential; 0 turns it off
    rate_burst: int = Field(2000, ge=1)
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    page_size_max: int = Field(500, ge=1)

    log_level: str = "info"
    system_log_capacity: int = Field(10_000, ge=100)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value and not value.startswith(("sqlite", "postgresql", "postgres")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError("must be one of debug, info, warning, error")
        return value.lower()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'taskyard.db').resolve()}"

    @property
    def binds_loopback(self) -> bool:
        if self.host in {"localhost", ""}:
            return self.host == "localhost"
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class WorkerSettings(_Settings):
    """Settings of a worker agent."""

    model_config = SettingsConfigDict(env_prefix="TASKYARD_", extra="ignore")

    server: str = "http://127.0.0.1:8080"
    api_key: str | None = None
    task_types: str = "shell,python,http"
    concurrency: int = Field(4, ge=1, le=1024)
    name: str | None = None
    heartbeat_interval: PositiveFloat = 5.0
    poll_wait: PositiveFloat = 20.0
    kill_grace_seconds: PositiveFloat = 5.0
    shutdown_grace_seconds: PositiveFloat = 30.0
    allow_private_urls: bool = False
    # Seconds between measurements of each run's process tree (cpu, memory, disk, connections), sent
    # with the run's reports; 0 turns sampling off.
    sample_interval: float = Field(5.0, ge=0)

    @field_validator("server")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @property
    def task_type_list(self) -> list[str]:
        return [t.strip() for t in self.task_types.split(",") if t.strip()]
