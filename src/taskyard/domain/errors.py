"""The one error tree of taskyard. Domain errors carry no HTTP codes; the API maps them in one place.

    TaskyardError
    ├── NotFound                 a resource does not exist (or is not visible to the caller)
    ├── Conflict                 the request collides with current state
    │   └── StaleAttempt         a write from an attempt whose lease was lost
    ├── ValidationFailed         input breaks a rule (field, rule, value)
    ├── AuthenticationFailed     no or bad credentials
    ├── PermissionDenied         credentials lack the role
    ├── RateLimited              too many requests for one credential
    └── Unavailable              a dependency (the database) cannot be reached

Each class's docstring is its default message.
"""

from __future__ import annotations

from typing import Any


class TaskyardError(Exception):
    """Something went wrong."""

    code = "SYSTEM_ERROR"

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or (type(self).__doc__ or "").strip()
        self.details = details
        super().__init__(self.message)


class NotFound(TaskyardError):
    """The resource does not exist."""

    code = "RESOURCE_NOT_FOUND"


class Conflict(TaskyardError):
    """The request conflicts with the current state of the resource."""

    code = "RESOURCE_CONFLICT"


class StaleAttempt(Conflict):
    """This attempt no longer holds the run's lease; its writes are refused."""


class ValidationFailed(TaskyardError):
    """The request did not pass validation."""

    code = "VALIDATION_ERROR"

    def __init__(self, message: str | None = None, *, field: str | None = None, rule: str = "invalid",
                 value: Any = None) -> None:
        super().__init__(message, field=field, rule=rule, value=value)


class AuthenticationFailed(TaskyardError):
    """Authentication is required: send a valid API key or JWT."""

    code = "AUTHENTICATION_ERROR"


class PermissionDenied(TaskyardError):
    """The credentials do not allow this action."""

    code = "AUTHORIZATION_ERROR"


class RateLimited(TaskyardError):
    """Too many requests; slow down."""

    code = "RATE_LIMITED"

    def __init__(self, message: str | None = None, *, retry_after: float = 1.0) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


class Unavailable(TaskyardError):
    """The service is temporarily unavailable."""

    code = "DATABASE_ERROR"
