"""Media fetching, both sides of each boundary: addresses, allow-lists, schemes, local files,
SSRF (literal, resolved, rebinding, redirected), redirects, size caps, time limits, retries,
concurrency. The only network is a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import httpcore
import pytest

from nimctl.allowlist import parse_allowlist
from nimctl.errors import ConfigError
from nimctl.media.fetch import (
    FetchError,
    FetchPolicy,
    MediaFetcher,
    _PinnedBackend,
    is_public_address,
)
from tests.support.image_server import ImageServer

LOOPBACK = (ip_network("127.0.0.1/32"),)
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 100


def local(**overrides: Any) -> FetchPolicy:
    """A policy that may reach the test server on 127.0.0.1."""
    return FetchPolicy(**{"allowed_networks": LOOPBACK, **overrides})


def resolver(table: dict[str, list[str]], calls: list[str] | None = None) -> Any:
    """A DNS stub: names in `table` resolve to its addresses, others do not exist."""

    async def resolve(host: str, port: int) -> list[Any]:
        if calls is not None:
            calls.append(host)
        host = host.rstrip(".")  # a fully-qualified name, as real DNS treats it
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ip_address(a) for a in table[host]]

    return resolve


@pytest.fixture
def server() -> Any:
    with ImageServer() as srv:
        yield srv


@pytest.fixture
async def fetcher() -> AsyncIterator[Callable[..., MediaFetcher]]:
    made: list[MediaFetcher] = []

    def make(policy: FetchPolicy | None = None, **kwargs: Any) -> MediaFetcher:
        made.append(MediaFetcher(policy or local(), **kwargs))
        return made[-1]

    yield make
    for item in made:
        await item.aclose()


async def refused(fetcher: MediaFetcher, url: str, max_bytes: int = 10**6) -> FetchError:
    with pytest.raises(FetchError) as info:
        await fetcher.fetch(url, max_bytes)
    return info.value


# -- addresses -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("1.1.1.1", True),
        ("93.184.215.14", True),
        ("127.0.0.1", False),
        ("127.255.255.254", False),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("172.16.0.1", False),
        ("172.31.255.255", False),
        ("172.32.0.1", True),  # just past 172.16/12
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.100.100.200", False),  # Alibaba metadata
        ("100.64.0.1", False),  # CGNAT
        ("100.63.255.255", True),  # just before 100.64/10
        ("100.128.0.0", True),  # just after
        ("198.18.0.1", False),  # benchmarking
        ("198.20.0.1", True),
        ("192.0.2.1", False),  # documentation
        ("198.51.100.7", False),
        ("203.0.113.9", False),
        ("224.0.0.1", False),  # multicast
        ("239.255.255.250", False),
        ("240.0.0.1", False),  # reserved
        ("255.255.255.255", False),  # broadcast
        ("2606:4700:4700::1111", True),
        ("2001:4860:4860::8888", True),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("fd00:ec2::254", False),  # AWS metadata over IPv6
        ("ff02::1", False),
        ("2001:db8::1", False),  # documentation
        ("::ffff:127.0.0.1", False),  # IPv4-mapped
        ("::ffff:10.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        ("::127.0.0.1", False),  # IPv4-compatible
        ("::8.8.8.8", True),
        ("::ffff:0:7f00:1", False),  # IPv4-translated
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::1", False),  # 6to4 of 169.254.169.254
        ("2002:808:808::1", True),  # 6to4 of 8.8.8.8
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of the metadata address
        ("64:ff9b::808:808", True),
        ("64:ff9b:1::808:808", False),  # local-use NAT64
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # Teredo, client 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", True),  # Teredo, client 8.8.8.8
    ],
)
def test_address_classification(address: str, public: bool) -> None:
    assert is_public_address(ip_address(address)) is public


# -- allow-list --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "hosts", "networks"),
    [
        ("", (), ()),
        (
            "images.example.com, *.corp.internal, 127.0.0.1/32, 10.0.0.0/8, ::1",
            ("images.example.com", "*.corp.internal"),
            ("127.0.0.1/32", "10.0.0.0/8", "::1/128"),
        ),
        ("Images.Example.COM.,", ("images.example.com",), ()),
        ("192.168.1.5 fd00::/8", (), ("192.168.1.5/32", "fd00::/8")),
    ],
)
def test_allowlist_parses(value: str, hosts: tuple[str, ...], networks: tuple[str, ...]) -> None:
    assert parse_allowlist(value) == (hosts, tuple(ip_network(n) for n in networks))


@pytest.mark.parametrize(
    "entry",
    [
        "10.0.0.0/33",
        "10.0.0.1/8",  # host bits set
        "::1/129",
        "http://x",
        "host:8080",
        "*",
        "*.",
        "a..b",
        ".example.com",
        "ex ample.com,a.*.com",
        "1.2.3.256",
        "127.1",
        "bücher.example",
        "-bad.example",
    ],
)
def test_allowlist_refuses(entry: str) -> None:
    with pytest.raises(ConfigError, match="NIM_MEDIA_ALLOWLIST") as info:
        parse_allowlist(f"good.example, {entry}")
    assert "good.example" not in str(info.value)


def test_policy_refuses_impossible_settings() -> None:
    with pytest.raises(ConfigError):
        FetchPolicy(max_concurrent=0)
    with pytest.raises(ConfigError):
        FetchPolicy(total_timeout_s=0)


# -- URL shapes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.png",
        "gopher://example.com/",
        "data:image/png;base64,AAAA",
        "javascript:alert(1)",
        "example.com/a.png",
        "//example.com/a.png",
        " http://example.com/a.png",
        "file:///etc/passwd",  # no local root configured
    ],
)
async def test_schemes_refused(fetcher: Callable[..., MediaFetcher], url: str) -> None:
    assert (await refused(fetcher(), url)).reason == "scheme"


@pytest.mark.parametrize(
    "url",
    [
        "http://user:s3cret@example.com/a.png",
        "http://user@example.com/a.png",
        "http://evil.com\\@127.0.0.1/a.png",
        "http:///a.png",
        "http://1.2.3.256/a.png",
        "http://[::1/a.png",
    ],
)
async def test_malformed_or_credentialed_urls_refused(
    fetcher: Callable[..., MediaFetcher], url: str
) -> None:
    error = await refused(fetcher(), url)
    assert error.reason == "url"
    assert "s3cret" not in error.message


async def test_disabled_url_fetching(fetcher: Callable[..., MediaFetcher], tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    f = fetcher(FetchPolicy(url_fetching=False, local_root=tmp_path))
    for url in ("http://example.com/a.png", "HTTPS://example.com/a.png"):
        error = await refused(f, url)
        assert error.reason == "disabled"
        assert "data:" in error.message
    assert await f.fetch(f"file://{tmp_path}/a.png", 1000) == PNG  # local files still allowed


# -- file:// -----------------------------------------------------------------------------------


@pytest.fixture
def media_root(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    (root / "a.png").write_bytes(PNG)
    (root / "sub" / "b c.png").write_bytes(b"nested")
    (tmp_path / "secret.txt").write_bytes(b"secret")
    (root / "escape.png").symlink_to(tmp_path / "secret.txt")
    (root / "inside.png").symlink_to(root / "a.png")
    return root


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/a.png", PNG), ("/sub/b%20c.png", b"nested"), ("/inside.png", PNG), ("/sub/../a.png", PNG)],
)
async def test_file_inside_root(
    fetcher: Callable[..., MediaFetcher], media_root: Path, path: str, expected: bytes
) -> None:
    f = fetcher(FetchPolicy(local_root=media_root))
    assert await f.fetch(f"file://{media_root}{path}", 1000) == expected


@pytest.mark.parametrize(
    "path",
    [
        "{root}/../secret.txt",
        "{root}/%2e%2e/secret.txt",
        "{root}/escape.png",  # symlink pointing out of the root
        "{root}/sub",  # a directory
        "{root}/missing.png",
        "/etc/passwd",
        "{root}x/a.png",  # a sibling sharing the root's name as a prefix
    ],
)
async def test_file_refused(
    fetcher: Callable[..., MediaFetcher], media_root: Path, path: str
) -> None:
    f = fetcher(FetchPolicy(local_root=media_root))
    error = await refused(f, "file://" + path.format(root=media_root))
    assert error.reason == "local_path"
    assert str(media_root.parent / "secret.txt") not in error.message  # no resolved paths


async def test_file_other_host_refused(
    fetcher: Callable[..., MediaFetcher], media_root: Path
) -> None:
    f = fetcher(FetchPolicy(local_root=media_root))
    assert (await refused(f, f"file://fileserver{media_root}/a.png")).reason == "local_path"


async def test_file_size_cap(fetcher: Callable[..., MediaFetcher], media_root: Path) -> None:
    f = fetcher(FetchPolicy(local_root=media_root))
    assert await f.fetch(f"file://{media_root}/a.png", len(PNG)) == PNG
    error = await refused(f, f"file://{media_root}/a.png", len(PNG) - 1)
    assert error.reason == "too_large"


# -- SSRF ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "blocked_address"),
        ("127.0.0.1.", "blocked_address"),
        ("[::ffff:127.0.0.1]", "blocked_address"),
        ("[::1]", "blocked_address"),
        ("2130706433", "blocked_address"),
        ("0x7f000001", "blocked_address"),
        ("0x7f.1", "blocked_address"),
        ("0177.1", "blocked_address"),
        ("127.1", "blocked_address"),
        ("0177.0.0.1", "url"),  # httpx itself refuses leading zeros in a dotted quad
        ("localhost", "blocked_address"),  # through the system resolver (/etc/hosts)
    ],
)
async def test_loopback_refused_unless_allowed(
    fetcher: Callable[..., MediaFetcher], server: ImageServer, host: str, reason: str
) -> None:
    server.route("/a.png", PNG)
    error = await refused(fetcher(FetchPolicy()), f"http://{host}:{server.port}/a.png")
    assert error.reason == reason
    assert server.count("/a.png") == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "2130706433", "0x7f.1", "127.1"])
async def test_loopback_allowed_by_network(
    fetcher: Callable[..., MediaFetcher], server: ImageServer, host: str
) -> None:
    server.route("/a.png", PNG, content_type="image/png")
    assert await fetcher(local()).fetch(f"http://{host}:{server.port}/a.png", 1000) == PNG
    assert server.count("/a.png") == 1


async def test_resolved_private_address_refused(
    fetcher: Callable[..., MediaFetcher], server: ImageServer
) -> None:
    dns = resolver({"evil.example": ["10.0.0.1"], "mixed.example": ["8.8.8.8", "127.0.0.1"]})
    f = fetcher(FetchPolicy(allowed_networks=(ip_network("10.0.0.0/8"),)), resolver=dns)
    mixed = await refused(f, f"http://mixed.example:{server.port}/a.png")
    assert mixed.reason == "blocked_address"  # one private answer is enough
    f = fetcher(FetchPolicy(), resolver=dns)
    error = await refused(f, "http://evil.example/a.png")
    assert error.reason == "blocked_address"
    assert "evil.example" in error.message
    assert "10.0.0.1" not in error.message  # never echo what the name resolved to


@pytest.mark.parametrize(
    ("allowed", "host", "ok"),
    [
        ("images.test", "images.test", True),
        ("images.test", "IMAGES.test.", True),
        ("images.test", "x.images.test", False),
        ("*.corp.test", "a.corp.test", True),
        ("*.corp.test", "a.b.corp.test", True),
        ("*.corp.test", "corp.test", False),
        ("*.corp.test", "evilcorp.test", False),
        ("10.0.0.0/8", "images.test", False),  # networks admit addresses, not names
    ],
)
async def test_allowed_hosts(
    fetcher: Callable[..., MediaFetcher], server: ImageServer, allowed: str, host: str, ok: bool
) -> None:
    server.route("/a.png", PNG)
    hosts, networks = parse_allowlist(allowed)
    names = ["images.test", "x.images.test", "a.corp.test", "a.b.corp.test", "corp.test"]
    dns = resolver({n: ["127.0.0.1"] for n in [*names, "evilcorp.test"]})
    f = fetcher(FetchPolicy(allowed_hosts=hosts, allowed_networks=networks), resolver=dns)
    url = f"http://{host}:{server.port}/a.png"
    if ok:
        assert await f.fetch(url, 1000) == PNG
    else:
        assert (await refused(f, url)).reason == "blocked_address"
        assert server.count("/a.png") == 0


@pytest.mark.parametrize("retries", [0, 1])
async def test_rebinding_uses_the_vetted_answer(
    fetcher: Callable[..., MediaFetcher], server: ImageServer, retries: int
) -> None:
    """First answer: 127.0.0.2 (allow-listed; nothing listens there). Every later answer:
    127.0.0.1, where the server is. The connection goes to the vetted 127.0.0.2 and is
    refused; a second connection looks the name up again and refuses 127.0.0.1."""
    server.route("/a.png", PNG)
    calls: list[str] = []

    async def rebinding(host: str, port: int) -> list[Any]:
        calls.append(host)
        return [ip_address("127.0.0.2" if len(calls) == 1 else "127.0.0.1")]

    policy = FetchPolicy(allowed_networks=(ip_network("127.0.0.2/32"),), retries=retries)
    error = await refused(
        fetcher(policy, resolver=rebinding), f"http://rebind.example:{server.port}/a.png"
    )
    assert error.reason == ("connect" if retries == 0 else "blocked_address")
    assert len(calls) == 1 + retries  # one lookup per connection, none between check and use
    assert server.count("/a.png") == 0


class _RecordingBackend(httpcore.AsyncNetworkBackend):
    """Records where a connection would go and which name TLS would verify, then fails."""

    def __init__(self) -> None:
        self.connected: list[tuple[str, int]] = []
        self.tls_names: list[str | None] = []

    async def connect_tcp(self, host: str, port: int, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        self.connected.append((host, port))
        backend = self

        class Stream(httpcore.AsyncNetworkStream):
            async def start_tls(
                self, ssl_context: Any, server_hostname: str | None = None, timeout: Any = None
            ) -> httpcore.AsyncNetworkStream:
                backend.tls_names.append(server_hostname)
                raise httpcore.ConnectError("recorded")

            async def aclose(self) -> None:
                pass

        return Stream()


async def test_connection_pinned_to_vetted_ip_with_sni_of_url_host() -> None:
    """What httpcore 1.0.9 does with our backend: TCP to the IP literal we vetted, TLS
    server_hostname (SNI and certificate check) still the URL's host."""
    calls: list[str] = []
    inner = _RecordingBackend()
    dns = resolver({"images.test": ["93.184.215.14"]}, calls)
    backend = _PinnedBackend(FetchPolicy(), dns, inner)
    async with httpcore.AsyncConnectionPool(network_backend=backend) as pool:
        with pytest.raises(httpcore.ConnectError):
            await pool.request("GET", "https://images.test/a.png")
    assert inner.connected == [("93.184.215.14", 443)]
    assert inner.tls_names == ["images.test"]
    assert calls == ["images.test"]


class _CannedStream(httpcore.AsyncNetworkStream):
    """Plays one HTTP response back, recording how many bytes each read asked for; it stands
    for the TLS stream too (start_tls returns it)."""

    def __init__(self, response: bytes, reads: list[int]) -> None:
        self._left = response
        self.reads = reads

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self.reads.append(max_bytes)
        chunk, self._left = self._left[:max_bytes], self._left[max_bytes:]
        return chunk

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: Any = None
    ) -> httpcore.AsyncNetworkStream:
        return self

    def get_extra_info(self, info: str) -> Any:
        return None


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_media_body_is_read_a_mebibyte_at_a_time(scheme: str) -> None:
    """httpcore asks for 64 KiB per read; each read is a trip through httpcore, h11 and anyio,
    so megabytes of media are read in 1 MiB pieces instead, over TLS too."""
    body = bytes(range(256)) * (3 * 4096)  # 3 MiB
    response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    reads: list[int] = []

    class Canned(httpcore.AsyncNetworkBackend):
        async def connect_tcp(self, host: str, port: int, **_: Any) -> httpcore.AsyncNetworkStream:
            return _CannedStream(response, reads)

    backend = _PinnedBackend(FetchPolicy(), resolver({}, []), Canned())
    async with httpcore.AsyncConnectionPool(network_backend=backend) as pool:
        answer = await pool.request("GET", f"{scheme}://93.184.215.14/a.png")
    assert answer.content == body
    assert reads and min(reads) >= 2**20


def _self_signed(hostname: str, directory: Path) -> tuple[Path, Path, str]:
    """A certificate for `hostname` only: (cert file, key file, cert PEM)."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (directory / "cert.pem").write_bytes(pem)
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return directory / "cert.pem", directory / "key.pem", pem.decode()


async def test_tls_verifies_url_host_over_pinned_ip(tmp_path: Path) -> None:
    """Real TLS through the real backend: the socket goes to 127.0.0.1, the certificate is
    for images.test only, and the handshake succeeds for https://images.test/ (so SNI and
    the hostname check use the URL's host) and fails for another name on the same IP."""
    cert, key, pem = _self_signed("images.test", tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cadata=pem)
    dns = resolver({"images.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    backend = _PinnedBackend(local(), dns)
    with ImageServer(tls=server_tls) as srv:
        srv.route("/a.png", PNG)
        async with httpcore.AsyncConnectionPool(
            ssl_context=client_tls, network_backend=backend
        ) as pool:
            response = await pool.request("GET", f"https://images.test:{srv.port}/a.png")
            assert (response.status, response.content) == (200, PNG)
            with pytest.raises(httpcore.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await pool.request("GET", f"https://other.test:{srv.port}/a.png")
        assert srv.count("/a.png") == 1


# -- redirects ---------------------------------------------------------------------------------


async def test_redirect_to_private_address_refused(
    fetcher: Callable[..., MediaFetcher], server: ImageServer
) -> None:
    server.route("/a.png", PNG)
    server.redirect("/to-evil", "http://evil.example/a.png")
    server.redirect("/to-other-loopback", f"http://127.0.0.2:{server.port}/a.png")
    server.redirect("/to-file", "file:///etc/passwd")
    f = fetcher(local(local_root=Path("/")), resolver=resolver({"evil.example": ["10.0.0.1"]}))
    error = await refused(f, server.url("/to-evil"))
    assert error.reason == "blocked_address"
    assert "redirected" in error.message
    assert (await refused(f, server.url("/to-other-loopback"))).reason == "blocked_address"
    assert (await refused(f, server.url("/to-file"))).reason == "scheme"
    assert server.count("/a.png") == 0


@pytest.mark.parametrize(("hops", "ok"), [(3, True), (4, False)])
async def test_redirect_limit(
    fetcher: Callable[..., MediaFetcher], server: ImageServer, hops: int, ok: bool
) -> None:
    server.route("/final.png", PNG)
    for i in range(hops):
        server.redirect(f"/hop{i}", server.url(f"/hop{i + 1}") if i + 1 < hops else "/final.png")
    f = fetcher(local(max_redirects=3))
    if ok:
        assert await f.fetch(server.url("/hop0"), 1000) == PNG
    else:
        assert (await refused(f, server.url("/hop0"))).reason == "redirects"
        assert server.count("/final.png") == 0


async def test_relative_redirect_followed(
    fetcher: Callable[..., MediaFetcher], server: ImageServer
) -> None:
    server.route("/img/b.png", PNG)
    server.redirect("/img/a.png", "b.png", status=301)
    server.redirect("/old/x", "../img/a.png", status=308)
    assert await fetcher().fetch(server.url("/old/x?v=1"), 1000) == PNG


# -- size ----------------------------------------------------------------------------------------


async def test_size_cap_boundary(fetcher: Callable[..., MediaFetcher], server: ImageServer) -> None:
    server.route("/a.png", PNG)
    f = fetcher()
    assert await f.fetch(server.url("/a.png"), len(PNG)) == PNG
    error = await refused(f, server.url("/a.png"), len(PNG) - 1)
    assert error.reason == "too_large"
    assert str(len(PNG) - 1) in error.message


@pytest.mark.parametrize("content_length", [True, False])
async def test_size_cap_large_bodies(
    fetcher: Callable[..., MediaFetcher], server: ImageServer, content_length: bool
) -> None:
    server.large("/big", 50 * 2**20, content_length=content_length)  # 50 MiB, never held
    server.large("/small", 100_000, content_length=content_length)
    f = fetcher()
    assert (await refused(f, server.url("/big"), 1_000_000)).reason == "too_large"
    assert len(await f.fetch(server.url("/small"), 100_000)) == 100_000
    assert (await refused(f, server.url("/small"), 99_999)).reason == "too_large"


async def test_size_cap_applies_to_decompressed_bytes(
    fetcher: Callable[..., MediaFetcher], server: ImageServer
) -> None:
    bomb = gzip.compress(b"\0" * 20 * 2**20)  # 20 MiB of zeros in ~20 KiB
    server.route("/bomb", bomb, headers={"Content-Encoding": "gzip"})
    server.route("/ok", gzip.compress(PNG), headers={"Content-Encoding": "gzip"})
    f = fetcher()
    assert (await refused(f, server.url("/bomb"), 1_000_000)).reason == "too_large"
    assert await f.fetch(server.url("/ok"), len(PNG)) == PNG


# -- time ----------------------------------------------------------------------------------------


async def test_trickle_hits_total_deadline(
    fetcher: Callable[..., MediaFetcher], server: ImageServer
) -> None:
    server.trickle("/slow", 100, bytes_per_second=1)
    f = fetcher(local(total_timeout_s=0.5, read_timeout_s=5.0))
    started = time.monotonic()
    error = await refused(f, server.url("/slow"))
    elapsed = time.monotonic() - started
    assert error.reason == "timeout"
    # The whole body would take 100 s and each byte comes within the read timeout, so only the
    # total deadline can have ended it (the upper bound is a deadline, not a measurement).
    assert 0.4 < elapsed < 50


async def test_read_timeout_retried_then_reported(
    fetcher: Callable[..., MediaFetcher], server: ImageServer
) -> None:
    server.route("/stall", PNG, delay_s=2.0)
    f = fetcher(local(read_timeout_s=0.2, retries=1))
    assert (await refused(f, server.url("/stall"))).reason == "timeout"
    assert server.count("/stall") == 2


# -- status codes and retries --------------------------------------------------------------------


async def test_404_not_retried(fetcher: Callable[..., MediaFetcher], server: ImageServer) -> None:
    server.route("/gone.png", statuses=[404])
    error = await refused(fetcher(), server.url("/gone.png"))
    assert error.reason == "http_status"
    assert "HTTP 404" in error.message
    assert server.count("/gone.png") == 1


async def test_503_then_200_retried(
    fetcher: Callable[..., MediaFetcher], server: ImageServer
) -> None:
    server.route("/flaky.png", PNG, statuses=[503, 200])
    assert await fetcher().fetch(server.url("/flaky.png"), 1000) == PNG
    assert server.count("/flaky.png") == 2


async def test_429_honours_retry_after(
    fetcher: Callable[..., MediaFetcher], server: ImageServer
) -> None:
    server.route("/busy.png", PNG, statuses=[(429, {"Retry-After": "0"}), 200])
    assert await fetcher().fetch(server.url("/busy.png"), 1000) == PNG
    assert server.count("/busy.png") == 2


async def test_retry_after_beyond_deadline_gives_up_at_once(
    fetcher: Callable[..., MediaFetcher], server: ImageServer
) -> None:
    server.route("/later.png", PNG, statuses=[(429, {"Retry-After": "120"}), 200])
    started = time.monotonic()
    error = await refused(fetcher(local(total_timeout_s=60.0)), server.url("/later.png"))
    assert (error.reason, "HTTP 429" in error.message) == ("http_status", True)
    # Retry-After 120 s is past the 60 s deadline: sleeping would take all of it.
    assert time.monotonic() - started < 30
    assert server.count("/later.png") == 1


@pytest.mark.parametrize("retries", [0, 2])
async def test_persistent_503_fails_after_retries(
    fetcher: Callable[..., MediaFetcher], server: ImageServer, retries: int
) -> None:
    server.route("/down.png", PNG, statuses=[503] * 10)
    error = await refused(fetcher(local(retries=retries)), server.url("/down.png"))
    assert error.reason == "http_status"
    assert "HTTP 503" in error.message
    assert server.count("/down.png") == 1 + retries


async def test_connection_refused(fetcher: Callable[..., MediaFetcher]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    error = await refused(fetcher(local(retries=1)), f"http://127.0.0.1:{port}/a.png")
    assert error.reason == "connect"
    assert "127.0.0.1" in error.message  # the host the client sent


async def test_unknown_host(fetcher: Callable[..., MediaFetcher]) -> None:
    calls: list[str] = []
    f = fetcher(FetchPolicy(), resolver=resolver({}, calls))
    error = await refused(f, "http://no-such-host.example/a.png")
    assert error.reason == "dns"
    assert "no-such-host.example" in error.message
    assert calls == ["no-such-host.example"]  # not retried


async def test_slow_dns_is_bounded_by_the_connect_timeout(
    fetcher: Callable[..., MediaFetcher],
) -> None:
    async def hanging(host: str, port: int) -> list[Any]:
        await asyncio.sleep(30)
        return []

    started = time.monotonic()
    error = await refused(fetcher(local(connect_timeout_s=0.2), resolver=hanging), "http://a.test/")
    assert error.reason == "dns"
    assert time.monotonic() - started < 15  # the lookup alone would take 30 s


# -- concurrency and lifecycle -------------------------------------------------------------------


async def test_concurrency_bound(fetcher: Callable[..., MediaFetcher], server: ImageServer) -> None:
    server.route("/slow.png", PNG, delay_s=0.15)
    f = fetcher(local(max_concurrent=2))
    bodies = await asyncio.gather(*(f.fetch(server.url("/slow.png"), 1000) for _ in range(6)))
    assert bodies == [PNG] * 6
    assert server.count("/slow.png") == 6
    assert server.max_in_flight("/slow.png") == 2


async def test_closed_fetcher_refuses(server: ImageServer) -> None:
    server.route("/a.png", PNG)
    f = MediaFetcher(local())
    assert await f.fetch(server.url("/a.png"), 1000) == PNG
    await f.aclose()
    await f.aclose()  # idempotent
    with pytest.raises(RuntimeError):
        await f.fetch(server.url("/a.png"), 1000)
