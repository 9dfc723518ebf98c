"""SSRF against the real server, proven by a canary: an HTTP server on 127.0.0.1 that counts
every request it gets. The tiny server admits only the name "localhost"; every other way of
reaching loopback (IP forms, other names resolving to it, a redirect) must be refused without a
byte fetched, and every private, link-local, shared, multicast and metadata range refused
before any connection is tried. API key and mTLS refusals: tests/api/test_operations.py,
tests/api/test_tls.py and tests/e2e/test_operations.py (run by `make reliability` too)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.support.errors import assert_error_shape
from tests.support.image_server import ImageServer
from tests.support.media import image_bytes
from tests.support.tiny import ask as ask_with
from tests.support.tiny import image


@pytest.fixture(scope="module")
def canary() -> Iterator[ImageServer]:
    with ImageServer() as server:
        server.route("/ok.png", image_bytes("PNG"), content_type="image/png")
        server.redirect("/to-loopback", f"http://127.0.0.1:{server.port}/canary/redirected")
        server.redirect("/to-ipv6-loopback", f"http://[::1]:{server.port}/canary/redirected6")
        server.redirect("/to-metadata", "http://169.254.169.254/latest/meta-data/")
        yield server


def loopback_names() -> list[str]:
    """Names other than "localhost" that resolve to a loopback address on this machine."""
    names = []
    for name in {socket.gethostname(), "localhost.localdomain", "ip6-localhost", "vm", "runsc"}:
        try:
            infos = socket.getaddrinfo(name, None)
        except OSError:
            continue
        addresses = {str(info[4][0]) for info in infos}
        if any(a == "::1" or a.startswith("127.") for a in addresses):
            names.append(name)
    return sorted(names)


LOOPBACK_FORMS = [
    "127.0.0.1",
    "127.0.0.2",
    "127.1",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "0.0.0.0",
    "[::]",
    "LOCALHOST.",
]
PRIVATE = [
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "100.64.0.1",
    "100.100.100.200",  # Alibaba Cloud metadata
    "169.254.169.254",  # AWS, GCP, Azure metadata
    "169.254.170.2",  # ECS task metadata
    "198.18.0.1",
    "224.0.0.1",
    "255.255.255.255",
    "[fd00:ec2::254]",  # AWS metadata over IPv6
    "[fc00::1]",
    "[fe80::1]",
    "[ff02::1]",
    "[64:ff9b::a00:1]",  # NAT64 of 10.0.0.1
    "[::ffff:10.0.0.1]",
    "[2002:a00:1::]",  # 6to4 of 10.0.0.1
]


def ask(server, url: str) -> httpx.Response:
    return ask_with(server, image(url))


def refused(response: httpx.Response) -> str:
    assert 400 <= response.status_code < 500, response.text
    return assert_error_shape(response.json(), response.status_code)["message"]


def test_no_way_to_loopback_fetches_anything(tiny_server, canary, figures):
    cases = [f"http://{host}:{canary.port}/canary/{i}" for i, host in enumerate(LOOPBACK_FORMS)]
    cases += [f"http://{name}:{canary.port}/canary/name-{name}" for name in loopback_names()]
    cases += [
        f"http://localhost:{canary.port}/to-loopback",
        f"http://localhost:{canary.port}/to-ipv6-loopback",
        f"http://localhost:{canary.port}/to-metadata",
    ]
    reasons = {}
    for url in cases:
        message = refused(ask(tiny_server, url))
        reasons[url] = message.rsplit("(", 1)[-1].rstrip(")")
    assert canary.hits("/canary") == 0, "a refused URL was fetched"
    # The admitted name works, so the refusals above are about the address, not the server.
    assert ask(tiny_server, f"http://localhost:{canary.port}/ok.png").status_code == 200
    figures.record(
        "ssrf_loopback",
        urls=len(cases),
        fetched=canary.hits("/canary"),
        reasons=sorted(set(reasons.values())),
    )


@pytest.mark.parametrize("host", PRIVATE)
def test_private_ranges_are_refused_before_connecting(tiny_server, host):
    message = refused(ask(tiny_server, f"http://{host}/x.png"))
    assert "blocked_address" in message, message
