"""The worker's standing with the server: its registration, its lease and the status the server gave it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import httpx

from taskyard.settings import WorkerSettings
from taskyard.worker import system_info
from taskyard.worker.protocol import Backoff, Json, RegistrationRefused, ServerApi, ServerError, describe

logger = logging.getLogger("taskyard.worker")

_IP_DETECT_TIMEOUT_SECONDS = 2.0
_UNREGISTER_TIMEOUT_SECONDS = 5.0
# Refusals that retrying cannot fix.
_FATAL_REGISTRATION = frozenset({400, 401, 403, 404, 422})


class Session:
    """Who this worker is to the server and what the server last said about it.

    ``wake`` is set whenever something changes that may make the in-flight poll the wrong one;
    ``on_forgotten`` is called with a reason when the server no longer knows the worker, so whatever it
    held is void.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        api: ServerApi,
        *,
        wake: asyncio.Event,
        on_forgotten: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self._api = api
        self._wake = wake
        self._on_forgotten = on_forgotten
        self.worker_id: str | None = None
        self._hostname = "localhost"
        self._ip_address = system_info.FALLBACK_IP
        self.lease_seconds = 15.0
        self.last_contact = time.monotonic()
        self.lease_lost = False
        self.server_status = "active"
        self.generation = 0  # bumped by every registration; tells stale 404s from fresh ones
        self.registered = asyncio.Event()
        self._register_lock = asyncio.Lock()

    async def identify(self) -> None:
        """Finds the host name and the address the server will see, for the registration."""
        self._hostname = system_info.hostname()
        try:
            self._ip_address = await asyncio.wait_for(
                asyncio.to_thread(system_info.outbound_ip, self.settings.server), _IP_DETECT_TIMEOUT_SECONDS
            )
        except TimeoutError:
            self._ip_address = system_info.FALLBACK_IP

    async def register_first(self, stopping: asyncio.Event) -> bool:
        """Registers, retrying while the server is unreachable; False if stopped before that worked."""
        return await self._register_retrying(stopping, "the server refused to register this worker")

    async def reregister(self, generation: int) -> None:
        """Called on a 404 for the worker: the server forgot it (database reset, deleted by an admin)."""
        async with self._register_lock:
            if generation != self.generation:
                return  # another loop already registered again
            logger.warning("the server no longer knows worker %s; registering again", self.worker_id)
            self.registered.clear()
            # Whatever this worker held was requeued or no longer exists.
            self._on_forgotten("the server forgot this worker")
            await self._register_retrying(None, "the server refused to register this worker again")

    async def _register_retrying(self, stopping: asyncio.Event | None, refusal: str) -> bool:
        """Registers, retrying until it works or ``stopping`` is set (never gives up without one)."""
        backoff = Backoff()
        while stopping is None or not stopping.is_set():
            try:
                await self._register()
                return True
            except ServerError as exc:
                if exc.status in _FATAL_REGISTRATION:
                    raise RegistrationRefused(f"{refusal}: {exc}") from exc
                self._api.refused("registration", exc)
                delay = exc.retry_after or backoff.next()
            except httpx.HTTPError as exc:
                self._api.unreachable("registration", exc)
                delay = backoff.next()
            if stopping is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay)
        return False

    async def _register(self) -> None:
        body: Json = {
            "hostname": self._hostname,
            "ip_address": self._ip_address,
            "port": 0,
            "task_types": self.settings.task_type_list,
            "max_concurrent_tasks": self.settings.concurrency,
            "metadata": system_info.worker_metadata(),
        }
        # Without a name, a re-registration keeps the id the server chose, so the worker stays one
        # row in the server's registry.
        wanted = self.settings.name or self.worker_id
        if wanted:
            body["id"] = wanted
        sent = time.monotonic()
        data = await self._api.call("POST", "/workers", body)
        worker_id = data.get("id")
        if not isinstance(worker_id, str) or not worker_id:
            raise ServerError(201, "BAD_RESPONSE", "the registration answer has no worker id")
        self.worker_id = worker_id
        self.apply_answer(data)
        self.generation += 1
        self.last_contact = sent
        self.lease_lost = False
        self._api.reachable()
        self.registered.set()
        self._wake.set()
        logger.info(
            "registered as %s with %s (task types %s, concurrency %d, lease %gs)",
            worker_id,
            self.settings.server,
            ",".join(self.settings.task_type_list),
            self.settings.concurrency,
            self.lease_seconds,
        )

    async def unregister(self) -> None:
        if self.worker_id is None or not self.registered.is_set():
            return
        try:
            await asyncio.wait_for(
                self._api.call("DELETE", f"/workers/{self.worker_id}", timeout=_UNREGISTER_TIMEOUT_SECONDS),
                _UNREGISTER_TIMEOUT_SECONDS,
            )
        except ServerError as exc:
            if exc.status != 404:
                logger.warning("could not unregister worker %s: %s", self.worker_id, exc)
            return
        except (httpx.HTTPError, TimeoutError) as exc:
            logger.warning(
                "could not unregister worker %s (%s); the server will requeue its runs when their leases lapse",
                self.worker_id,
                describe(exc),
            )
            return
        logger.info("unregistered worker %s", self.worker_id)

    def apply_answer(self, data: Json) -> None:
        """Takes in the lease and the status that registration, poll and heartbeat answers carry."""
        lease = data.get("lease_seconds")
        if isinstance(lease, int | float) and lease > 0:
            self.lease_seconds = float(lease)
        status = data.get("status")
        if isinstance(status, str) and status != self.server_status:
            previous, self.server_status = self.server_status, status
            if status == "active":
                logger.info("the server set worker %s back to active: claiming runs again", self.worker_id)
            elif previous == "active":
                logger.warning(
                    "the server marks worker %s %s: finishing current runs, claiming no new ones",
                    self.worker_id,
                    status,
                )
            self._wake.set()

    def contact(self, at: float) -> None:
        """The server answered a request sent at ``at``: the leases it holds for us ran at least until then."""
        self.last_contact = max(self.last_contact, at)
        self._api.reachable()
        if self.lease_lost and time.monotonic() - self.last_contact < self.lease_seconds:
            self.lease_lost = False
            logger.info("back in contact with the server: claiming runs again")
            self._wake.set()
