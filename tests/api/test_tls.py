"""TLS and mTLS through nimctl's uvicorn set-up, with real handshakes on 127.0.0.1
(certificates made by the test; the engine is the fake one)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from nimctl.api import create_app
from nimctl.profiles import ProfileStore, builtin_profiles_dir
from nimctl.server import make_server, uvicorn_config
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
    server = make_server(app, settings)
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


def _replace(source: Path, target: Path) -> None:
    """As a Secret volume does: a complete new file renamed into place."""
    staged = target.with_name(target.name + ".new")
    shutil.copyfile(source, staged)
    os.replace(staged, target)


def _served_copy(certs: Certs, directory: Path) -> Certs:
    """The server's files in a directory of their own, to be replaced by the test."""
    directory.mkdir()
    for path in (certs.server_cert, certs.server_key, certs.ca):
        shutil.copyfile(path, directory / path.name)
    return replace(
        certs,
        server_cert=directory / certs.server_cert.name,
        server_key=directory / certs.server_key.name,
        ca=directory / certs.ca.name,
    )


def _client_context(*cas: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for ca in cas:
        context.load_verify_locations(ca)
    if cert:
        context.load_cert_chain(*cert)
    return context


def _handshake(url: str, context: ssl.SSLContext) -> bytes:
    """The certificate a new connection is shown (DER)."""
    port = int(url.rsplit(":", 1)[1])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        peer = tls.getpeercert(binary_form=True)
    assert peer is not None
    return peer


def _der(pem: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.read_text())


def _peer_of(response: httpx.Response) -> bytes:
    """The certificate of the connection that carried `response`."""
    peer = response.extensions["network_stream"].get_extra_info("ssl_object").getpeercert(True)
    assert isinstance(peer, bytes)
    return peer


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


@pytest.fixture
def renewed(tmp_path_factory) -> Certs:
    """Another CA's: the 'renewed' server pair, and a client the first CA did not sign."""
    return make_certs(tmp_path_factory.mktemp("renewed"), ca_name="nimctl renewed CA")


def test_a_renewed_certificate_is_served_to_new_connections_only(certs, renewed, tmp_path, caplog):
    live = _served_copy(certs, tmp_path / "live")
    settings = tls_settings(live, "TLS").model_copy(update={"ssl_reload_interval": 0.1})
    trusting_both = _client_context(certs.ca, renewed.ca)
    with running(settings) as url, httpx.Client(verify=trusting_both) as kept:
        before = kept.get(f"{url}/v1/health/live")
        assert before.status_code == 200 and _peer_of(before) == _der(certs.server_cert)

        # A certificate whose key is not yet there: refused, the old pair stays.
        _replace(renewed.server_cert, live.server_cert)
        _wait_for(lambda: "cannot be used" in caplog.text, "a warning about the mismatched pair")
        assert _handshake(url, trusting_both) == _der(certs.server_cert)

        _replace(renewed.server_key, live.server_key)  # the pair complete: used
        _wait_for(
            lambda: _handshake(url, trusting_both) == _der(renewed.server_cert),
            "the renewed certificate on a new connection",
        )
        # The connection opened before still works, with the certificate it was made with.
        after = kept.get(f"{url}/v1/health/live")
        assert after.status_code == 200 and _peer_of(after) == _der(certs.server_cert)


def test_mtls_trusts_a_new_ca_once_the_ca_file_changes(certs, renewed, tmp_path):
    live = _served_copy(certs, tmp_path / "live")
    settings = tls_settings(live, "MTLS").model_copy(update={"ssl_reload_interval": 0.1})
    newcomer = _client_context(certs.ca, cert=(renewed.client_cert, renewed.client_key))

    def newcomer_accepted() -> bool:
        try:
            with httpx.Client(verify=newcomer) as client:
                return client.get(f"{url}/v1/health/live").status_code == 200
        except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
            return False

    with running(settings) as url:
        assert not newcomer_accepted()
        bundle = tmp_path / "bundle.pem"
        bundle.write_text(certs.ca.read_text() + renewed.ca.read_text())
        _replace(bundle, live.ca)
        _wait_for(newcomer_accepted, "a client certificate of the new CA accepted")
        old_client = _client_context(certs.ca, cert=(certs.client_cert, certs.client_key))
        with httpx.Client(verify=old_client) as client:
            assert client.get(f"{url}/v1/health/live").status_code == 200


def test_a_mismatched_pair_at_start_is_a_configuration_error(certs, renewed):
    from nimctl.errors import ConfigError
    from nimctl.tls import ReloadingTls

    mixed = replace(certs, server_key=renewed.server_key)
    with pytest.raises(ConfigError, match="TLS: cannot load .*KEY_VALUES_MISMATCH"):
        ReloadingTls.from_settings(tls_settings(mixed, "TLS"))
