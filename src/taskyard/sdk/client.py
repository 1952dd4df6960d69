"""A small synchronous client for the scheduler API (spec 2).

It speaks HTTP only, so it works against any taskyard server and never imports the server's code.
Every method returns the `data` of the response envelope; a `success: false` answer raises
`TaskyardAPIError`, an unreachable server `TaskyardConnectionError`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self, TypedDict, cast
from urllib.parse import quote

import httpx

DEFAULT_SERVER = "http://127.0.0.1:8080"

JSONObject = dict[str, Any]

# Words of spec 2 for runs that will not change any more.
FINAL_RUN_STATUSES = frozenset({"completed", "failed", "aborted"})


class Page(TypedDict):
    items: list[JSONObject]
    total: int
    page: int
    size: int
    total_pages: int


class LogLine(TypedDict):
    id: int
    timestamp: str
    level: str
    message: str
    stream: str
    attempt: int


class LogPage(TypedDict):
    run_id: int
    status: str  # the spec word: pending, running, completed, failed, aborted
    state: str  # the canonical status, which also tells pending from queued
    items: list[LogLine]
    next_after: int


class TaskyardClientError(Exception):
    """Base of the errors this client raises."""


class TaskyardConnectionError(TaskyardClientError):
    """The server could not be reached, or did not answer in time."""

    def __init__(self, url: str, reason: str, message: str | None = None) -> None:
        self.url = url
        self.reason = reason
        super().__init__(message or f"cannot reach the taskyard server at {url}: {reason}")


class TaskyardAPIError(TaskyardClientError):
    """The server answered with an error envelope (or something that is not the API at all)."""

    def __init__(self, status: int, code: str, message: str, details: Mapping[str, Any] | None = None,
                 request_id: str | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        self.request_id = request_id
        super().__init__(f"{message} ({code}, HTTP {status})")


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def normalize_server(url: str) -> str:
    """`http://host:8080`, `http://host:8080/` and `http://host:8080/api` all mean the same server."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"server URL must start with http:// or https:// (got {url!r})")
    if url.endswith("/api"):
        url = url[: -len("/api")]
    return url


class TaskyardClient:
    """Typed access to /api/tasks, /api/runs, /api/workers and /api/system.

    `base_url` and `api_key` fall back to TASKYARD_SERVER and TASKYARD_API_KEY, read when the client
    is built so that a process can change its environment before making one.
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 30,
                 *, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = normalize_server(base_url or os.environ.get("TASKYARD_SERVER") or DEFAULT_SERVER)
        key = api_key if api_key is not None else os.environ.get("TASKYARD_API_KEY")
        headers = {"Accept": "application/json", "User-Agent": "taskyard-sdk"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.Client(base_url=self.base_url + "/api", headers=headers, timeout=timeout,
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                json: Any = None, headers: Mapping[str, str] | None = None) -> Any:
        """One API call; returns the envelope's `data`."""
        try:
            response = self._http.request(method, path, params=_drop_none(params or {}), json=json,
                                          headers=headers)
        except httpx.ConnectTimeout as exc:
            raise TaskyardConnectionError(self.base_url, "connection timed out") from exc
        except httpx.TimeoutException as exc:
            reason = f"no answer within {self._http.timeout.read}s ({type(exc).__name__})"
            raise TaskyardConnectionError(self.base_url, reason,
                                          f"the taskyard server at {self.base_url} sent {reason}") from exc
        except httpx.TransportError as exc:
            raise TaskyardConnectionError(self.base_url, str(exc) or type(exc).__name__) from exc
        return self._unwrap(response)

    @staticmethod
    def _unwrap(response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "success" not in body:
            # A proxy or some other service on that port answered, not the scheduler API.
            snippet = response.text[:200].strip()
            raise TaskyardAPIError(response.status_code, "BAD_RESPONSE",
                                   f"unexpected answer from {response.request.url} (HTTP {response.status_code})"
                                   + (f": {snippet}" if snippet else ""))
        request_id = (body.get("metadata") or {}).get("request_id") or response.headers.get("x-request-id")
        if body.get("success") is True:
            return body.get("data")
        error = body.get("error") or {}
        raise TaskyardAPIError(response.status_code, str(error.get("code") or "SYSTEM_ERROR"),
                               str(error.get("message") or f"HTTP {response.status_code}"),
                               error.get("details") if isinstance(error.get("details"), dict) else None,
                               request_id)

    # tasks

    def create_task(self, name: str, task_type: str, command: str, *, arguments: list[str] | None = None,
                    executor: str | None = None, description: str | None = None, schedule: str | None = None,
                    timezone: str | None = None, catchup: str | None = None, priority: str | None = None,
                    retry_count: int | None = None, timeout_seconds: int | None = None,
                    dependencies: list[str | int] | None = None, tags: list[str] | None = None,
                    metadata: Mapping[str, Any] | None = None, idempotency_key: str | None = None) -> JSONObject:
        body = _drop_none({
            "name": name, "task_type": task_type, "command": command, "arguments": arguments,
            "executor": executor, "description": description, "schedule": schedule, "timezone": timezone,
            "catchup": catchup, "priority": priority, "retry_count": retry_count,
            "timeout_seconds": timeout_seconds, "dependencies": dependencies, "tags": tags,
            "metadata": dict(metadata) if metadata is not None else None,
        })
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return cast(JSONObject, self.request("POST", "/tasks", json=body, headers=headers))

    def list_tasks(self, *, page: int = 1, size: int = 20, status: str | None = None,
                   task_type: str | None = None, priority: str | None = None, search: str | None = None,
                   sort: str | None = None, order: str | None = None) -> Page:
        return cast(Page, self.request("GET", "/tasks", params={
            "page": page, "size": size, "status": status, "task_type": task_type, "priority": priority,
            "search": search, "sort": sort, "order": order}))

    def get_task(self, task_id: int) -> JSONObject:
        return cast(JSONObject, self.request("GET", f"/tasks/{int(task_id)}"))

    def update_task(self, task_id: int, changes: Mapping[str, Any]) -> JSONObject:
        """Send only the fields to change; `{"schedule": None}` clears the schedule."""
        return cast(JSONObject, self.request("PUT", f"/tasks/{int(task_id)}", json=dict(changes)))

    def delete_task(self, task_id: int) -> JSONObject:
        return cast(JSONObject, self.request("DELETE", f"/tasks/{int(task_id)}"))

    def trigger_task(self, task_id: int, *, parameters: Mapping[str, Any] | None = None,
                     priority: str | None = None, timeout_seconds: int | None = None,
                     idempotency_key: str | None = None) -> JSONObject:
        body = _drop_none({"parameters": dict(parameters) if parameters is not None else None,
                           "priority": priority, "timeout_seconds": timeout_seconds})
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return cast(JSONObject, self.request("POST", f"/tasks/{int(task_id)}/trigger", json=body,
                                             headers=headers))

    def pause_task(self, task_id: int) -> JSONObject:
        return cast(JSONObject, self.request("POST", f"/tasks/{int(task_id)}/pause"))

    def resume_task(self, task_id: int) -> JSONObject:
        return cast(JSONObject, self.request("POST", f"/tasks/{int(task_id)}/resume"))

    # runs

    def list_runs(self, *, page: int = 1, size: int = 20, task_id: int | None = None, status: str | None = None,
                  worker_id: str | None = None, start_date: str | None = None, end_date: str | None = None,
                  sort: str | None = None, order: str | None = None) -> Page:
        return cast(Page, self.request("GET", "/runs", params={
            "page": page, "size": size, "task_id": task_id, "status": status, "worker_id": worker_id,
            "start_date": start_date, "end_date": end_date, "sort": sort, "order": order}))

    def get_run(self, run_id: int) -> JSONObject:
        return cast(JSONObject, self.request("GET", f"/runs/{int(run_id)}"))

    def run_logs(self, run_id: int, *, after: int = 0, limit: int = 1000) -> LogPage:
        """Log lines with an id above `after`, oldest first; pass `next_after` back to continue."""
        return cast(LogPage, self.request("GET", f"/runs/{int(run_id)}/logs",
                                          params={"after": after, "limit": limit}))

    def abort_run(self, run_id: int) -> JSONObject:
        return cast(JSONObject, self.request("POST", f"/runs/{int(run_id)}/abort"))

    def restart_run(self, run_id: int) -> JSONObject:
        return cast(JSONObject, self.request("POST", f"/runs/{int(run_id)}/restart"))

    # workers

    def list_workers(self, *, page: int = 1, size: int = 20, status: str | None = None,
                     task_type: str | None = None, hostname: str | None = None) -> Page:
        return cast(Page, self.request("GET", "/workers", params={
            "page": page, "size": size, "status": status, "task_type": task_type, "hostname": hostname}))

    def get_worker(self, worker_id: str) -> JSONObject:
        return cast(JSONObject, self.request("GET", f"/workers/{quote(worker_id, safe='')}"))

    # tenants and projects (named by their GUIDs)

    def list_tenants(self, *, page: int = 1, size: int = 20, sort: str | None = None,
                     order: str | None = None) -> Page:
        return cast(Page, self.request("GET", "/tenants", params={"page": page, "size": size, "sort": sort,
                                                                  "order": order}))

    def create_tenant(self, name: str, *, idempotency_key: str | None = None) -> JSONObject:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return cast(JSONObject, self.request("POST", "/tenants", json={"name": name}, headers=headers))

    def list_projects(self, tenant_id: str, *, page: int = 1, size: int = 20, sort: str | None = None,
                      order: str | None = None) -> Page:
        return cast(Page, self.request("GET", f"/tenants/{quote(tenant_id, safe='')}/projects", params={
            "page": page, "size": size, "sort": sort, "order": order}))

    def create_project(self, tenant_id: str, name: str, *, idempotency_key: str | None = None) -> JSONObject:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return cast(JSONObject, self.request("POST", f"/tenants/{quote(tenant_id, safe='')}/projects",
                                             json={"name": name}, headers=headers))

    # system

    def health(self) -> JSONObject:
        """Also returned (not raised) when the server reports itself unhealthy with HTTP 503."""
        return cast(JSONObject, self.request("GET", "/system/health"))

    def stats(self) -> JSONObject:
        return cast(JSONObject, self.request("GET", "/system/stats"))
