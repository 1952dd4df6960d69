"""What a worker tells the server about the machine it runs on."""

from __future__ import annotations

import os
import platform
import socket
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psutil

from taskyard import __version__

FALLBACK_IP = "127.0.0.1"


def hostname() -> str:
    return socket.gethostname() or "localhost"


def outbound_ip(server_url: str) -> str:
    """The local address the kernel would use to reach the server.

    Connecting a UDP socket sends nothing; it only makes the kernel pick a route and a source
    address, which is the address the server will see (short of NAT). Blocking: the server's name may
    need a DNS lookup, so async callers run this in a thread.
    """
    parts = urlsplit(server_url)
    host = parts.hostname
    if not host:
        return FALLBACK_IP
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        if not infos:
            return FALLBACK_IP
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.connect(address)
            local = str(probe.getsockname()[0])
    except OSError:
        return FALLBACK_IP
    if local in {"0.0.0.0", "::"}:
        return FALLBACK_IP
    return local.split("%", 1)[0]


def worker_metadata() -> dict[str, Any]:
    return {
        "version": __version__,
        "pid": os.getpid(),
        "python": platform.python_version(),
        "platform": sys.platform,
        "cpu_count": os.cpu_count(),
    }


@dataclass(frozen=True)
class Sample:
    load_average: float | None
    memory_usage: int | None
    cpu_usage: float | None


def sample() -> Sample:
    """Cheap enough to take on every heartbeat (reads /proc, never sleeps)."""
    try:
        load: float | None = os.getloadavg()[0]
    except (OSError, AttributeError):
        load = None
    try:
        memory: int | None = psutil.virtual_memory().used // 2**20
    except (OSError, psutil.Error):
        memory = None
    try:
        # interval=None compares with the previous call instead of blocking to measure.
        cpu: float | None = psutil.cpu_percent(None)
    except (OSError, psutil.Error):
        cpu = None
    return Sample(load, memory, cpu)
