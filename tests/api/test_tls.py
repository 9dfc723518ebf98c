"""TLS and mTLS through nimctl's uvicorn set-up, with real handshakes on 127.0.0.1
(certificates made by the test; the engine is the fake one)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from nimctl.api import create_app
from nimctl.profiles import ProfileStore, builtin_profiles_dir
from nimctl.server import GracefulServer, uvicorn_config
from nimctl.settings import NimSettings
from tests.support.certs import Certs, make_certs
from tests.support.fake_engine import FakeEngine


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@contextmanager
def running(settings: NimSettings) -> Iterator[str]:
    profile = ProfileStore.load([builtin_profiles_dir()]).get("tiny")
    engine = FakeEngine(served_model_name=profile.served_model_name)
    engine.release.set()
    app = create_app(settings, profile, engine)
    server = GracefulServer(uvicorn_config(app, settings), app, 1.0)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    thread = threading.Thread(target=asyncio.run, args=(server.serve(sockets=[sock]),), daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            threading.Event().wait(0.01)
        yield f"https://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def tls_settings(certs: Certs, mode: str) -> NimSettings:
    return NimSettings(
        ssl_mode=mode,
        ssl_key_path=certs.server_key,
        ssl_cert_path=certs.server_cert,
        ssl_ca_certs_path=certs.ca,
    )


def test_tls_handshake(certs):
    with running(tls_settings(certs, "TLS")) as url:
        trusting = ssl.create_default_context(cafile=str(certs.ca))
        response = httpx.get(f"{url}/v1/health/live", verify=trusting)
        assert response.status_code == 200
        assert response.json()["message"] == "Service is live."
        with pytest.raises(httpx.ConnectError):  # an untrusted server certificate
            httpx.get(f"{url}/v1/health/live", verify=True)
        with pytest.raises(httpx.RemoteProtocolError):  # plain HTTP to a TLS port
            httpx.get(url.replace("https", "http") + "/v1/health/live")


def test_mtls_needs_a_client_certificate_from_the_trusted_ca(certs):
    def client(cert: tuple[str, str] | None) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(certs.ca))
        if cert:
            context.load_cert_chain(*cert)
        return httpx.Client(verify=context)

    with running(tls_settings(certs, "MTLS")) as url:
        with client((str(certs.client_cert), str(certs.client_key))) as good:
            assert good.get(f"{url}/v1/health/live").status_code == 200
        for cert in (None, (str(certs.other_client_cert), str(certs.other_client_key))):
            with (
                client(cert) as refused,
                pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)),
            ):
                refused.get(f"{url}/v1/health/live")


def test_keep_alive_outlives_load_balancer_idle_timeouts():
    """uvicorn's 5 s default dropped requests of clients reusing a connection under load."""
    profile = ProfileStore.load([builtin_profiles_dir()]).get("tiny")
    settings = NimSettings()
    app = create_app(settings, profile, FakeEngine(served_model_name=profile.served_model_name))
    assert uvicorn_config(app, settings).timeout_keep_alive > 60
