"""Fetching the media that chat requests reference by URL, without becoming a proxy into the
private network.

NIM downloads whatever URL a client sends and turns every failure into a 500. Here a URL is
fetched only if it is http(s) (or file:// under an operator-chosen directory), every address
its host resolves to is public or allow-listed, and the connection goes to exactly the
addresses that were checked: the check lives in the network backend that opens the socket, so
a DNS answer that changes between check and connect (rebinding) cannot slip through, nor can a
redirect or a URL parser that reads the host differently from us. Every failure becomes a
`FetchError` whose `reason` the API layer can map and whose `message` the client can act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import ssl
import stat
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import httpcore
import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from nimctl import __version__
from nimctl.allowlist import ALLOWLIST_SETTING, NUMERIC_LABEL, IPNetwork
from nimctl.errors import ConfigError

logger = logging.getLogger("nimctl.media")

IPAddress = IPv4Address | IPv6Address
Resolver = Callable[[str, int], Awaitable[list[IPv4Address | IPv6Address]]]

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_KEEPALIVE_S = 5.0
# Back-off between attempts: 0.2 s, 0.4 s, ... up to 2 s, plus up to 0.1 s of jitter.
_BACKOFF = wait_exponential_jitter(multiplier=0.2, max=2.0, jitter=0.1)

# Networks that are never "public", beyond what `is_global` already says. Python's own tables
# change between patch releases (3.11.7 calls multicast and 6to4 global), so the ones that
# matter for SSRF are spelled out here.
_BLOCKED_V4 = tuple(
    IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network", unspecified
        "10.0.0.0/8",  # RFC 1918
        "100.64.0.0/10",  # shared / CGNAT (holds Alibaba's metadata 100.100.100.200)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local (holds the usual cloud metadata 169.254.169.254)
        "172.16.0.0/12",  # RFC 1918
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",  # RFC 1918
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
    )
)
_BLOCKED_V6 = tuple(
    IPv6Network(n)
    for n in (
        "::/128",  # unspecified
        "::1/128",  # loopback
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard
        "2001::/23",  # IETF protocol assignments (Teredo is judged by its IPv4 addresses)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "5f00::/16",  # segment routing
        "fc00::/7",  # unique local (holds AWS's metadata fd00:ec2::254)
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local
        "ff00::/8",  # multicast
    )
)
_IPV4_COMPATIBLE = IPv6Network("::/96")
_IPV4_TRANSLATED = IPv6Network("::ffff:0:0:0/96")
_NAT64 = IPv6Network("64:ff9b::/96")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
# inet_aton's forms: each part decimal, octal (leading 0) or hex (0x).
_IPV4_PART = re.compile(r"^(?:0x[0-9a-f]*|0[0-7]*|[1-9][0-9]*)$", re.IGNORECASE)
_DIGITS = re.compile(r"^[0-9]+$")


class FetchError(Exception):
    """A URL that could not be fetched; `reason` is a short stable code, `message` a sentence
    for the client (no internal addresses beyond what the client sent; say what to do)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __repr__(self) -> str:
        return f"FetchError({self.reason!r}, {self.message!r})"


@dataclass(frozen=True)
class FetchPolicy:
    allowed_hosts: tuple[str, ...] = ()  # exact host names, or "*.example.com" (subdomains only)
    allowed_networks: tuple[IPv4Network | IPv6Network, ...] = ()
    local_root: Path | None = None  # file:// URLs allowed only under this directory
    url_fetching: bool = True  # False: http(s) URLs refused with reason "disabled"
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0  # between two reads
    total_timeout_s: float = 30.0  # whole fetch of one URL, retries and redirects included
    max_redirects: int = 3
    retries: int = 2  # extra attempts for transient failures only
    max_concurrent: int = 16  # concurrent fetches per MediaFetcher

    def __post_init__(self) -> None:
        for name in ("connect_timeout_s", "read_timeout_s", "total_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"media fetch policy: {name} must be positive")
        if self.max_redirects < 0 or self.retries < 0:
            raise ConfigError("media fetch policy: max_redirects and retries must be >= 0")
        if self.max_concurrent < 1:
            raise ConfigError("media fetch policy: max_concurrent must be at least 1")


def is_public_address(address: IPv4Address | IPv6Address) -> bool:
    """False for loopback, private (RFC 1918, fc00::/7), link-local, multicast, reserved,
    unspecified, shared/CGNAT 100.64/10, benchmarking 198.18/15, documentation ranges, broadcast,
    cloud metadata (169.254.169.254 is link-local anyway; also fd00:ec2::254 and 100.100.100.200),
    and any IPv6 form that embeds an IPv4 address (IPv4-mapped ::ffff:a.b.c.d, IPv4-compatible,
    6to4 2002::/16, Teredo 2001::/32, NAT64 64:ff9b::/96) judged by the embedded IPv4 address."""
    if isinstance(address, IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded:
            return all(is_public_address(v4) for v4 in embedded)
        blocked: Iterable[IPNetwork] = _BLOCKED_V6
    else:
        blocked = _BLOCKED_V4
    # `is_global` is a second opinion: it can only narrow what counts as public.
    return address.is_global and not any(address in net for net in blocked)


def _embedded_ipv4(address: IPv6Address) -> tuple[IPv4Address, ...]:
    """The IPv4 addresses a packet to `address` would really reach (empty for plain IPv6)."""
    if address.ipv4_mapped is not None:
        return (address.ipv4_mapped,)
    if address in _IPV4_COMPATIBLE or address in _IPV4_TRANSLATED or address in _NAT64:
        return (IPv4Address(int(address) & 0xFFFFFFFF),)
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address.teredo is not None:
        return address.teredo  # (server, client): both must be public
    return ()


def _host_address(host: str) -> IPAddress | None:
    """The address a literal-IP host names, in any form `inet_aton` accepts (2130706433,
    0x7f.1, 0177.0.0.1), or None for a DNS name. Raises ValueError for a host that ends in a
    number but is no valid address, which browsers refuse too."""
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if ":" in name:
        return ip_address(name)
    name = name[:-1] if name.endswith(".") else name
    labels = name.split(".")
    if not NUMERIC_LABEL.match(labels[-1]):
        return None
    if len(labels) > 4 or not all(_IPV4_PART.match(label) for label in labels):
        raise ValueError(f"not an IPv4 address: {host!r}")
    numbers = [_ipv4_part(label) for label in labels]
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(labels)):
        raise ValueError(f"not an IPv4 address: {host!r}")
    value = 0
    for number in head:
        value = value * 256 + number
    return IPv4Address(value * 256 ** (5 - len(labels)) + last)


def _ipv4_part(label: str) -> int:
    if label[:2].lower() == "0x":
        return int(label[2:] or "0", 16)
    return int(label, 8) if label.startswith("0") else int(label)


def _host_allowed(host: str, patterns: Iterable[str]) -> bool:
    name = host.rstrip(".").lower()
    for raw in patterns:
        pattern = raw.rstrip(".").lower()
        if pattern.startswith("*."):
            if name.endswith(pattern[1:]) and len(name) > len(pattern) - 1:
                return True
        elif name == pattern:
            return True
    return False


async def _system_resolver(host: str, port: int) -> list[IPAddress]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [
        ip_address(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)
    ]


# -- the network layer: vet, then connect to exactly what was vetted ---------------------------


class _Blocked(Exception):
    """The host resolves to an address the policy does not admit."""


class _Unresolvable(Exception):
    """The host has no address (or the lookup failed)."""


_READ_BYTES = 1 << 20


class _LargeReads(httpcore.AsyncNetworkStream):
    """Reads up to 1 MiB at a time where httpcore asks for 64 KiB: a media body is megabytes,
    and each read is a trip through httpcore, h11 and anyio on the event loop (measured, 5
    images of 1.9 MB from a local server: 23.5 against 19.5 ms of CPU). TLS streams too."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max(max_bytes, _READ_BYTES), timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _LargeReads(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to vetted addresses.

    httpcore hands `connect_tcp` the URL's host; we resolve it once, vet every answer, and
    connect to the IP literal, so nothing re-resolves later. TLS is unaffected: httpcore calls
    `start_tls(server_hostname=<URL host>)` on the stream we return, so SNI and certificate
    checks still use the name (httpcore 1.0.9, `_async/connection.py`, `_connect`).
    """

    def __init__(
        self,
        policy: FetchPolicy,
        resolver: Resolver,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        addresses = await self.vetted_addresses(host, port, timeout)
        error: Exception = httpcore.ConnectError(f"no address for {host}")
        for address in addresses:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise httpcore.ConnectTimeout(f"connecting to {host} timed out")
            try:
                stream = await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=remaining,
                    local_address=local_address,
                    socket_options=socket_options,
                )
                return _LargeReads(stream)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc  # try the next address
        raise error

    async def vetted_addresses(
        self, host: str, port: int, timeout: float | None
    ) -> list[IPAddress]:
        """The addresses of `host`, all admitted by the policy; raises _Blocked/_Unresolvable."""
        try:
            literal = _host_address(host)
        except ValueError:
            raise _Unresolvable(host) from None
        if literal is not None:
            addresses = [literal]
        else:
            try:
                async with asyncio.timeout(timeout):
                    addresses = list(dict.fromkeys(await self._resolver(host, port)))
            except (OSError, TimeoutError):
                raise _Unresolvable(host) from None
            if not addresses:
                raise _Unresolvable(host)
        if not self._admits(host, addresses):
            raise _Blocked(host)
        return addresses

    def _admits(self, host: str, addresses: list[IPAddress]) -> bool:
        if _host_allowed(host, self._policy.allowed_hosts):
            return True
        networks = self._policy.allowed_networks
        # One private answer is enough to refuse: the attacker picks which one we would use.
        return all(
            is_public_address(address) or any(address in network for network in networks)
            for address in addresses
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("media is never fetched over Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


# httpcore's exceptions as httpx's, most specific first (as httpx's own transport maps them).
_HTTPCORE_TO_HTTPX: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core_type, httpx_type in _HTTPCORE_TO_HTTPX:
            if isinstance(exc, core_type):
                raise httpx_type(str(exc)) from exc
        raise


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        if hasattr(self._stream, "aclose"):
            await self._stream.aclose()


class _PoolTransport(httpx.AsyncBaseTransport):
    """httpx over our own httpcore pool; the same mapping as httpx.AsyncHTTPTransport, which
    offers no public way to pass a network backend."""

    def __init__(self, pool: httpcore.AsyncConnectionPool) -> None:
        self._pool = pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=cast(AsyncIterable[bytes], request.stream),
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = await self._pool.handle_async_request(core_request)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(cast(AsyncIterable[bytes], response.stream)),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


# -- fetching ----------------------------------------------------------------------------------


class _Transient(Exception):
    """A failure worth another attempt; `failure` is what the caller sees if none is left."""

    def __init__(self, failure: FetchError, retry_after: float | None = None) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.retry_after = retry_after


class MediaFetcher:
    """Fetches media URLs under one FetchPolicy; one per server, closed at shutdown."""

    def __init__(self, policy: FetchPolicy, *, resolver: Resolver | None = None) -> None:
        self._policy = policy
        self._resolver = resolver or _system_resolver
        self._slots = asyncio.Semaphore(policy.max_concurrent)
        self._http: httpx.AsyncClient | None = None
        self._closed = False

    async def fetch(self, url: str, max_bytes: int) -> bytes:
        """The body of `url`, at most `max_bytes` (enforced while streaming, and up front from
        Content-Length). Raises FetchError."""
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        try:
            target = self._target(url)
            async with self._slots:
                if isinstance(target, str):
                    return await asyncio.to_thread(
                        _read_local_file, target, self._policy.local_root, max_bytes
                    )
                return await self._fetch_remote(target, max_bytes)
        except FetchError as exc:
            logger.debug("media fetch failed (%s): %s", exc.reason, exc.message)
            raise

    async def aclose(self) -> None:
        self._closed = True
        if self._http is not None:
            client, self._http = self._http, None
            await client.aclose()

    def _target(self, url: str) -> httpx.URL | str:
        """The http(s) URL to fetch, or the local path a file:// URL names."""
        match = _SCHEME.match(url)
        if match is None:
            raise FetchError("scheme", "the media URL must start with http:// or https://")
        scheme = match.group(1).lower()
        if scheme == "file" and self._policy.local_root is not None:
            return _file_path(url)
        if scheme not in ("http", "https"):
            raise FetchError(
                "scheme",
                f"media URLs with scheme '{scheme[:20]}' are not accepted; "
                "send an http(s) URL or a base64 data: URL",
            )
        if not self._policy.url_fetching:
            raise FetchError(
                "disabled",
                "this server does not fetch media URLs; send the media inline "
                "as a base64 data: URL",
            )
        return _http_url(url, None)

    def _client(self) -> httpx.AsyncClient:
        if self._closed:
            raise RuntimeError("MediaFetcher is closed")
        if self._http is None:
            policy = self._policy
            pool = httpcore.AsyncConnectionPool(
                ssl_context=httpx.create_ssl_context(trust_env=False),
                max_connections=policy.max_concurrent,
                max_keepalive_connections=policy.max_concurrent,
                keepalive_expiry=_KEEPALIVE_S,
                network_backend=_PinnedBackend(policy, self._resolver),
            )
            self._http = httpx.AsyncClient(
                transport=_PoolTransport(pool),
                timeout=httpx.Timeout(policy.read_timeout_s, connect=policy.connect_timeout_s),
                follow_redirects=False,
                trust_env=False,  # no proxies or .netrc from the environment
                headers={
                    "Accept": "*/*",
                    # Media is compressed already; asking for identity keeps the byte cap exact.
                    "Accept-Encoding": "identity",
                    "User-Agent": f"nimctl/{__version__} (media fetch)",
                },
            )
        return self._http

    async def _fetch_remote(self, url: httpx.URL, max_bytes: int) -> bytes:
        client = self._client()
        host = url.host  # what the client sent; messages name only this
        loop = asyncio.get_running_loop()
        # The deadline starts once a slot is held, so local queueing is not blamed on the host.
        deadline = loop.time() + self._policy.total_timeout_s
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                return await self._follow(client, url, max_bytes, host, deadline)
        except TimeoutError:
            if not scope.expired():
                raise
            raise FetchError(
                "timeout",
                f"fetching the media URL at {host} took longer than "
                f"{self._policy.total_timeout_s:g} s; use a faster host or a smaller file",
            ) from None

    async def _follow(
        self, client: httpx.AsyncClient, url: httpx.URL, max_bytes: int, host: str, deadline: float
    ) -> bytes:
        loop = asyncio.get_running_loop()

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, _Transient) and error.retry_after is not None:
                return error.retry_after
            return _BACKOFF(state)

        attempts_done = stop_after_attempt(self._policy.retries + 1)

        def stop(state: RetryCallState) -> bool:
            # Out of attempts; or give up with the real failure rather than sleep into the deadline.
            return attempts_done(state) or loop.time() + state.upcoming_sleep >= deadline

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Transient),
            stop=stop,
            wait=wait,
            reraise=True,
        )
        current = url
        for hop in range(self._policy.max_redirects + 1):
            try:
                outcome: bytes | httpx.URL = await retrying(
                    self._attempt, client, current, max_bytes, host
                )
            except _Transient as exc:
                raise exc.failure from None
            except _Blocked:
                where = "redirected to" if hop else "resolves to"
                raise FetchError(
                    "blocked_address",
                    f"the media URL at {host} {where} a private or reserved address, which this "
                    f"server does not fetch from; use a publicly reachable URL (operators can "
                    f"allow hosts with {ALLOWLIST_SETTING})",
                ) from None
            except _Unresolvable:
                where = "was redirected to a host that" if hop else "has a host that"
                raise FetchError(
                    "dns",
                    f"the media URL at {host} {where} does not resolve; check the URL",
                ) from None
            if isinstance(outcome, bytes):
                return outcome
            current = _http_url(str(outcome), host)
        raise FetchError(
            "redirects",
            f"the media URL at {host} redirected more than {self._policy.max_redirects} "
            "times; send the final URL instead",
        )

    async def _attempt(
        self, client: httpx.AsyncClient, url: httpx.URL, max_bytes: int, host: str
    ) -> bytes | httpx.URL:
        """One request: the body, or where a redirect points. Raises _Transient to retry."""
        try:
            async with client.stream("GET", url) as response:
                return await _consume(response, max_bytes, host)
        except (httpx.ConnectTimeout, httpx.ReadTimeout):
            raise _Transient(
                FetchError("timeout", f"the media URL at {host} did not answer in time")
            ) from None
        except httpx.TimeoutException:
            raise FetchError("timeout", f"the media URL at {host} did not answer in time") from None
        except (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
            raise _Transient(_connect_error(host)) from None
        except httpx.TransportError:
            raise _connect_error(host) from None


def _connect_error(host: str) -> FetchError:
    return FetchError(
        "connect",
        f"could not fetch the media URL at {host}: the connection failed; check that the URL "
        "is reachable from the internet",
    )


def _http_url(raw: str, redirected_from: str | None) -> httpx.URL:
    """`raw` as an http(s) URL we are willing to request; the first URL or a redirect's."""
    origin = "" if redirected_from is None else f" at {redirected_from} redirected to a URL that"
    try:
        url = httpx.URL(raw)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise FetchError("url", f"the media URL{origin} is malformed; check it") from None
    if url.scheme not in ("http", "https"):
        raise FetchError("scheme", f"the media URL{origin} is not http(s); send an http(s) URL")
    if url.userinfo:
        raise FetchError(
            "url",
            f"the media URL{origin} carries credentials (user:password@), which this server "
            "does not send; use a URL that needs none",
        )
    try:
        if not url.raw_host:
            raise ValueError("no host")
        _host_address(url.raw_host.decode("ascii"))  # numeric hosts must be valid addresses
    except ValueError:
        raise FetchError("url", f"the media URL{origin} has no valid host; check it") from None
    return url


async def _consume(response: httpx.Response, max_bytes: int, host: str) -> bytes | httpx.URL:
    status = response.status_code
    location = response.headers.get("location")
    if status in _REDIRECT_STATUSES and location:
        try:
            return response.url.join(location)
        except (httpx.InvalidURL, ValueError):
            raise FetchError(
                "url", f"the media URL at {host} redirected to a malformed URL"
            ) from None
    if status == 429 or status >= 500:
        raise _Transient(_status_error(status, host), _retry_after(response.headers))
    if not 200 <= status < 300:
        raise _status_error(status, host)
    return await _read_body(response, max_bytes, host)


def _status_error(status: int, host: str) -> FetchError:
    return FetchError(
        "http_status",
        f"the media URL at {host} answered HTTP {status}; check that the URL is right and "
        "publicly readable",
    )


def _retry_after(headers: httpx.Headers) -> float | None:
    """Retry-After in seconds; the HTTP-date form falls back to our own back-off."""
    value = headers.get("retry-after", "").strip()
    return float(value) if _DIGITS.match(value) else None


def _too_large(what: str, max_bytes: int) -> FetchError:
    return FetchError(
        "too_large",
        f"{what} is larger than this server's limit of {max_bytes} bytes; send a smaller file",
    )


async def _read_body(response: httpx.Response, max_bytes: int, host: str) -> bytes:
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    decoder = None
    if encoding in ("", "identity"):
        declared = response.headers.get("content-length", "").strip()
        if _DIGITS.match(declared) and int(declared) > max_bytes:
            raise _too_large(f"the media at {host}", max_bytes)
    elif encoding in ("gzip", "x-gzip"):
        decoder = zlib.decompressobj(zlib.MAX_WBITS | 16)
    elif encoding == "deflate":
        decoder = zlib.decompressobj()
    else:
        raise FetchError(
            "http_status",
            f"the media URL at {host} answered with Content-Encoding {encoding[:20]!r}, "
            "which this server does not decode; serve the file uncompressed",
        )
    # Chunks joined once at the end: a growing bytearray reallocates and copies as it grows,
    # and its bytes() copies it again (measured: 30 against 23.5 ms of CPU for 5 x 1.9 MB).
    chunks: list[bytes] = []
    size = 0

    def append(data: bytes) -> None:
        nonlocal size
        size += len(data)
        if size > max_bytes:
            raise _too_large(f"the media at {host}", max_bytes)
        chunks.append(data)

    try:
        async for chunk in response.aiter_raw():
            if decoder is None:
                append(chunk)
                continue
            # Never inflate more than one byte past the cap: compressed bombs stay small.
            while chunk:
                append(decoder.decompress(chunk, max_bytes - size + 1))
                chunk = decoder.unconsumed_tail
        if decoder is not None:
            append(decoder.flush())
    except zlib.error:
        raise FetchError(
            "http_status", f"the media URL at {host} sent a body that does not decompress"
        ) from None
    return b"".join(chunks)


def _file_path(url: str) -> str:
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.netloc.lower() not in ("", "localhost") or not path.startswith("/") or "\0" in path:
        raise FetchError("local_path", "file:// URLs must name an absolute local path")
    return path


def _read_local_file(path: str, root: Path | None, max_bytes: int) -> bytes:
    """The bytes of a file under `root`; runs in a worker thread (blocking file I/O)."""
    outside = FetchError(
        "local_path",
        f"the file:// path {path} is outside the directory this server reads media from",
    )
    if root is None:
        raise outside
    try:
        real_root = root.resolve(strict=True)
    except OSError:
        raise FetchError("local_path", "this server has no local media directory") from None
    # Containment before existence, so paths outside the root reveal nothing about themselves.
    real = Path(path).resolve()
    if not real.is_relative_to(real_root):
        raise outside
    try:
        # NOFOLLOW and NONBLOCK: a symlink or FIFO swapped in after the check is not followed
        # and does not hang the worker.
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FetchError("local_path", f"the file:// path {path} does not exist") from None
    except OSError:
        raise FetchError("local_path", f"the file:// path {path} cannot be read") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FetchError("local_path", f"the file:// path {path} is not a regular file")
        if info.st_size > max_bytes:
            raise _too_large(f"the file {path}", max_bytes)
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _too_large(f"the file {path}", max_bytes)
    return data
