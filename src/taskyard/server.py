"""The composition root of a server process: the API app with the leader loops in its lifespan."""

from __future__ import annotations

from fastapi import FastAPI

from taskyard.api.app import create_app
from taskyard.scheduler.loops import LeaderLoops, LoopTimings
from taskyard.services.clock import Clock, system_clock
from taskyard.services.core import Core
from taskyard.settings import ServerSettings


def create_server_app(settings: ServerSettings | None = None, *, clock: Clock = system_clock) -> FastAPI:
    settings = settings or ServerSettings.load()
    timings = LoopTimings(settings.scheduler_interval, settings.reaper_interval,
                          retention_interval=settings.retention_interval)

    def loops(core: Core) -> LeaderLoops:
        return LeaderLoops(core, timings)

    return create_app(settings, background=loops, clock=clock)
