"""The job tracking dialect (spec 5) under /api/{tenantId}/{projectId}/execution: read-only views of a
run as a job in a tenant's project. Answers are bare camelCase objects; errors keep the spec 2 envelope."""

from taskyard.api.jobs.routes import router

__all__ = ["router"]
