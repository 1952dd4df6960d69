"""The tracking dialect (spec 1) under /api/tracking: events from code inside or outside taskyard, the
runs they belong to, and Spring-Boot-shaped errors."""

from taskyard.api.tracking.errors import spring_error
from taskyard.api.tracking.routes import PREFIX, router

__all__ = ["PREFIX", "router", "spring_error"]
