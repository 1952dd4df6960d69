"""The ``http`` executor: one request to the task's URL, refused when the URL points somewhere it must not."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ipaddress
import json
import socket
import time
from http import HTTPStatus
from typing import Any

import httpx

from taskyard.worker.executors.base import (
    ERROR_MESSAGE_LIMIT,
    LOG_MESSAGE_LIMIT,
    RESULT_LIMIT,
    ExecutionResult,
    ExecutionSpec,
    LogLine,
    LogSink,
    Outcome,
)
from taskyard.worker.executors.output import (
    LogBatcher,
    clip_bytes,
    clip_text,
    format_seconds,
    now,
    run_batched,
    system_line,
)

DEFAULT_HTTP_TIMEOUT_SECONDS = 30.0

# --------------------------------------------------------------------------------------------------
# URL safety

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance-metadata endpoints hand out credentials; they are refused even with
# allow_private_urls, which exists for on-prem services, not for this.
_METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    }
)
_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
_UNSPECIFIED = (ipaddress.ip_network("0.0.0.0/8"), ipaddress.ip_network("::/128"))
_PRIVATE = (
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("172.16.0.0/12"),
    ipaddress.ip_network("192.168.0.0/16"),
    ipaddress.ip_network("100.64.0.0/10"),
    ipaddress.ip_network("fc00::/7"),
)


def _address_refusal(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why ``address`` must not be called, or None if it may be."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # Loopback stays allowed: developers point HTTP tasks at services on their own machine.
    if address.is_loopback:
        return None
    if address in _METADATA_ADDRESSES or any(address in net for net in _LINK_LOCAL):
        return "link-local/metadata"
    if address.is_multicast:
        return "multicast"
    if any(address in net for net in _UNSPECIFIED):
        return "unspecified"
    if any(address in net for net in _PRIVATE):
        return None if allow_private else "private (set allow_private_urls to permit it)"
    if address.is_reserved:
        return "reserved"
    return None


class _Refused(Exception):
    pass


def _parse_address(text: str) -> IPAddress:
    # getaddrinfo reports IPv6 link-local addresses with their zone ("fe80::1%eth0").
    return ipaddress.ip_address(text.split("%", 1)[0])


def _query_value(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list) and all(isinstance(v, str | int | float | bool) for v in value):
        return value
    return json.dumps(value, default=str)


# --------------------------------------------------------------------------------------------------
# The executor


class HttpExecutor:
    def __init__(
        self, *, allow_private_urls: bool = False, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._allow_private = allow_private_urls
        # Tests inject a MockTransport here; production always uses httpx's own.
        self._transport = transport

    async def run(self, spec: ExecutionSpec, sink: LogSink, abort: asyncio.Event) -> ExecutionResult:
        return await run_batched(
            sink, abort, lambda batcher: self._run(spec, batcher, abort), not_started="the request was sent"
        )

    async def _run(self, spec: ExecutionSpec, batcher: LogBatcher, abort: asyncio.Event) -> ExecutionResult:
        timeout = spec.timeout_seconds if spec.timeout_seconds is not None else DEFAULT_HTTP_TIMEOUT_SECONDS
        call = asyncio.create_task(self._call(spec, batcher, timeout))
        aborter = asyncio.create_task(abort.wait())
        try:
            await asyncio.wait({call, aborter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            aborter.cancel()
            if not call.done():
                call.cancel()
            await asyncio.gather(call, aborter, return_exceptions=True)
        if not call.cancelled():
            return call.result()
        await batcher.add(system_line("abort requested: HTTP request cancelled"))
        return ExecutionResult(Outcome.ABORTED, None, "aborted", None)

    async def _call(self, spec: ExecutionSpec, batcher: LogBatcher, timeout: float) -> ExecutionResult:
        url_text = spec.command.strip()
        try:
            async with asyncio.timeout(timeout):
                return await self._request(spec, url_text, batcher, timeout)
        except _Refused as exc:
            message = str(exc)
        except (TimeoutError, httpx.TimeoutException):
            message = f"timed out after {format_seconds(timeout)}s"
            await batcher.add(system_line(f"{message}: HTTP request to {url_text} cancelled"))
            return ExecutionResult(Outcome.TIMED_OUT, None, message, None)
        except httpx.ConnectError as exc:
            message = f"cannot connect to {url_text}: {str(exc) or type(exc).__name__}"
        except httpx.HTTPError as exc:
            message = f"HTTP request to {url_text} failed: {type(exc).__name__}: {exc}"
        except (ValueError, TypeError) as exc:
            # Malformed task metadata (a header value that is not latin-1, a body that is not JSON
            # serialisable) is the task's fault, not the worker's: fail the run, don't crash.
            message = f"cannot build the HTTP request to {url_text}: {type(exc).__name__}: {exc}"
        await batcher.add(system_line(message))
        return ExecutionResult(Outcome.FAILED, None, clip_text(message, ERROR_MESSAGE_LIMIT), None)

    async def _request(
        self, spec: ExecutionSpec, url_text: str, batcher: LogBatcher, timeout: float
    ) -> ExecutionResult:
        try:
            url = httpx.URL(url_text)
        except httpx.InvalidURL as exc:
            raise _Refused(f"refusing to call {url_text!r}: invalid URL ({exc})") from None
        if url.scheme not in ("http", "https"):
            raise _Refused(f"refusing to call {url_text}: only http and https URLs are allowed")
        host = url.raw_host.decode("ascii")
        if not host:
            raise _Refused(f"refusing to call {url_text}: the URL has no host")
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = await self._resolve(url_text, host, port)

        metadata = spec.metadata
        method = str(metadata.get("method") or ("POST" if spec.parameters else "GET")).upper()
        raw_headers = metadata.get("headers") or {}
        if not isinstance(raw_headers, dict):
            raise ValueError(f"metadata 'headers' must be an object, not {type(raw_headers).__name__}")
        headers = {str(k): str(v) for k, v in raw_headers.items()}
        # Connecting to the checked IP rather than the name closes the window in which DNS could be
        # re-pointed at an internal address between our check and httpx's own lookup. The Host
        # header and TLS SNI keep the original name so virtual hosts and certificates still work.
        if not any(k.lower() == "host" for k in headers):
            headers["Host"] = url.netloc.decode("ascii")
        extensions: dict[str, Any] = {"sni_hostname": host} if url.scheme == "https" else {}
        content: str | bytes | None = None
        json_body: Any = None
        if method in ("GET", "HEAD"):
            if spec.parameters:
                # Merged into the URL here because httpx's params= replaces an existing query string.
                url = url.copy_merge_params({k: _query_value(v) for k, v in spec.parameters.items()})
        elif "body" in metadata:
            body = metadata["body"]
            if isinstance(body, str | bytes):
                content = body
            else:
                json_body = body
        elif spec.parameters:
            json_body = spec.parameters

        # Redirects are not followed: the target of a redirect has not been checked.
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), follow_redirects=False, transport=self._transport
        ) as client:
            last_error: httpx.ConnectError | None = None
            for address in addresses:
                try:
                    started = time.monotonic()
                    async with client.stream(
                        method,
                        url.copy_with(host=address),
                        headers=headers,
                        content=content,
                        json=json_body,
                        extensions=extensions,
                    ) as response:
                        raw, truncated = await self._read_body(response)
                        elapsed_ms = (time.monotonic() - started) * 1000
                        return await self._interpret(
                            method, url_text, response, raw, truncated, elapsed_ms, batcher
                        )
                except httpx.ConnectError as exc:
                    # The name may resolve to several addresses (IPv6 and IPv4); try the next one.
                    last_error = exc
            assert last_error is not None
            raise last_error

    async def _resolve(self, url_text: str, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise _Refused(f"cannot resolve host {host!r} of {url_text}: {exc.strerror or exc}") from None
        addresses: list[str] = []
        for info in infos:
            text = str(info[4][0])
            if text not in addresses:
                addresses.append(text)
        if not addresses:
            raise _Refused(f"cannot resolve host {host!r} of {url_text}: no addresses")
        # Every address is checked, not just the first: a name with one public and one internal
        # record must not be usable to reach the internal one.
        for text in addresses:
            reason = _address_refusal(_parse_address(text), allow_private=self._allow_private)
            if reason is not None:
                raise _Refused(f"refusing to call {url_text}: address {text} is {reason}")
        return addresses

    async def _read_body(self, response: httpx.Response) -> tuple[bytes, bool]:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > RESULT_LIMIT:
                return bytes(body[:RESULT_LIMIT]), True
        return bytes(body), False

    async def _interpret(
        self,
        method: str,
        url_text: str,
        response: httpx.Response,
        raw: bytes,
        truncated: bool,
        elapsed_ms: float,
        batcher: LogBatcher,
    ) -> ExecutionResult:
        status = response.status_code
        reason = response.reason_phrase
        if not reason:
            # HTTP/2 has no reason phrases.
            with contextlib.suppress(ValueError):
                reason = HTTPStatus(status).phrase
        status_text = f"{status} {reason}".strip()
        await batcher.add(
            LogLine(
                now(),
                "info",
                clip_text(f"{method} {url_text} -> {status_text} ({elapsed_ms:.0f} ms)", LOG_MESSAGE_LIMIT),
                "stdout",
            )
        )
        encoding = response.encoding or "utf-8"
        try:
            body = codecs.getincrementaldecoder(encoding)("replace").decode(raw, final=not truncated)
        except LookupError:
            body = clip_bytes(raw, len(raw))
        if truncated:
            await batcher.add(system_line(f"response body truncated to {RESULT_LIMIT // 1024} KiB"))
        if 200 <= status < 300:
            return ExecutionResult(Outcome.COMPLETED, body, None, None)
        for line in clip_text(body, LOG_MESSAGE_LIMIT).splitlines():
            await batcher.add(LogLine(now(), "error", line, "stderr"))
        return ExecutionResult(Outcome.FAILED, None, f"HTTP {status_text}", None)
