"""What a worker tells the server about the machine it runs on."""

from __future__ import annotations

import os
import platform
import socket
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
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


# --------------------------------------------------------------------------------------------------
# A run's process tree

SAMPLE_UNITS = {"cpu": "percent", "memory_mb": "MB", "disk_read_bytes": "bytes", "disk_write_bytes": "bytes",
                "connections": "count", "cpu_seconds": "seconds", "memory_peak_mb": "MB"}


class ProcessTreeSampler:
    """Measures one run's process tree: the group leader and its children, recursively.

    The psutil.Process objects are kept from one measurement to the next, because CPU percent is the
    CPU time used since the previous call on the same object (a process seen for the first time counts
    0). Blocking (reads /proc): async callers run it in a thread.

    Across measurements it also keeps the run's totals (:meth:`totals`), because by the time the run
    has ended its processes are gone and cannot be asked any more.
    """

    def __init__(self, leader_pid: int) -> None:
        self.leader_pid = leader_pid
        self._known: dict[int, psutil.Process] = {}
        # Per process, the CPU time last seen: a process that has exited keeps counting with it.
        self._cpu_seconds: dict[psutil.Process, float] = {}
        # Only whole values are assigned, so totals() may read them while a measurement runs in a thread.
        self._cpu_seconds_total = 0.0
        self._peak_rss = 0.0
        self._measured = False

    def _tree(self) -> list[psutil.Process]:
        try:
            leader = self._known.get(self.leader_pid) or psutil.Process(self.leader_pid)
            members = [leader, *leader.children(recursive=True)]
        except (psutil.Error, OSError):
            return []
        tree: list[psutil.Process] = []
        for proc in members:
            known = self._known.get(proc.pid)
            # Same pid and same creation time: the same process (pids are reused).
            tree.append(known if known is not None and known == proc else proc)
        self._known = {proc.pid: proc for proc in tree}
        return tree

    def measure(self, timestamp: datetime | None = None) -> list[dict[str, Any]]:
        """One sample per measure; empty when the tree is gone."""
        tree = self._tree()
        if not tree:
            return []
        cpu = rss = read = written = connections = 0.0
        seen = io_seen = connections_seen = 0
        for proc in tree:
            try:
                with proc.oneshot():
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        continue
                    cpu += proc.cpu_percent(None)
                    rss += proc.memory_info().rss
                    times = proc.cpu_times()
                    self._cpu_seconds[proc] = times.user + times.system
                    seen += 1
                    try:
                        io = proc.io_counters()
                    except (psutil.AccessDenied, AttributeError, NotImplementedError, OSError):
                        pass
                    else:
                        read += io.read_bytes
                        written += io.write_bytes
                        io_seen += 1
                    try:
                        connections += len(proc.net_connections(kind="inet"))
                        connections_seen += 1
                    except (psutil.AccessDenied, AttributeError, NotImplementedError, OSError):
                        pass
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            except (psutil.Error, OSError):
                continue
        if not seen:
            return []
        self._cpu_seconds_total = sum(self._cpu_seconds.values())
        self._peak_rss = max(self._peak_rss, rss)
        self._measured = True
        at = (timestamp or datetime.now(UTC)).isoformat()
        values: dict[str, float] = {"cpu": round(cpu, 2), "memory_mb": round(rss / 2**20, 3)}
        if io_seen:
            values["disk_read_bytes"] = read
            values["disk_write_bytes"] = written
        if connections_seen:
            values["connections"] = connections
        return [{"name": name, "value": float(value), "unit": SAMPLE_UNITS[name], "timestamp": at}
                for name, value in values.items()]

    def totals(self, timestamp: datetime | None = None) -> list[dict[str, Any]]:
        """CPU seconds used and peak resident memory of the tree, as far as the measurements saw them;
        empty when none saw it."""
        if not self._measured:
            return []
        at = (timestamp or datetime.now(UTC)).isoformat()
        values = {"cpu_seconds": round(self._cpu_seconds_total, 3), "memory_peak_mb": round(self._peak_rss / 2**20, 3)}
        return [{"name": name, "value": float(value), "unit": SAMPLE_UNITS[name], "timestamp": at}
                for name, value in values.items()]
