"""Start and stop a real `nimctl serve` subprocess for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.servers import spawn_server

REPO = Path(__file__).resolve().parents[2]
# Kept between runs: the generated model and vLLM's caches make the next start faster.
E2E_CACHE = REPO / ".cache" / "e2e"
START_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    seconds_to_live: float = 0.0
    seconds_to_ready: float = 0.0
    ready_codes_before_200: list[int] = field(default_factory=list)
    # The readiness 503s' messages, in order, each once however often it was polled.
    ready_messages_before_200: list[str] = field(default_factory=list)
    live_before_ready: bool = False

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL for the whole process group (vLLM's engine processes too)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.poll()


def start_server(
    profile: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
    on_not_ready: Callable[[str], None] | None = None,
) -> Server:
    """`tls`: the client context for a server started with NIM_SSL_MODE (https).
    `on_not_ready` is called with each new readiness 503 message while it waits."""
    port = free_port()
    nimctl = Path(sys.executable).with_name("nimctl")
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NIM_")},
        "NIM_CACHE_PATH": str(E2E_CACHE),
        **(env or {}),
    }
    log = log_path.open("wb")
    began = time.monotonic()
    process = spawn_server(
        [str(nimctl), "serve", "--profile", profile, "--host", "127.0.0.1", "--port", str(port)],
        full_env,
        log,
    )
    scheme = "https" if tls else "http"
    server = Server(f"{scheme}://127.0.0.1:{port}", process, log_path)
    try:
        _wait_until_ready(server, began, tls, on_not_ready)
    except BaseException:
        server.stop(timeout=5)
        raise
    return server


def _wait_until_ready(
    server: Server,
    began: float,
    tls: ssl.SSLContext | None,
    on_not_ready: Callable[[str], None] | None = None,
) -> None:
    with httpx.Client(base_url=server.base_url, timeout=2.0, verify=tls or True) as client:
        while time.monotonic() - began < START_TIMEOUT_S:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"nimctl serve exited with {server.process.returncode}:\n{server.log_tail()}"
                )
            try:
                live = client.get("/v1/health/live").status_code
                answer = client.get("/v1/health/ready")
                ready = answer.status_code
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            if live == 200 and not server.seconds_to_live:
                server.seconds_to_live = time.monotonic() - began
            if ready == 200:
                server.seconds_to_ready = time.monotonic() - began
                return
            server.ready_codes_before_200.append(ready)
            message = _error_message(answer)
            seen = server.ready_messages_before_200
            if message is not None and (not seen or seen[-1] != message):
                seen.append(message)
                if on_not_ready is not None:
                    on_not_ready(message)
            server.live_before_ready = server.live_before_ready or live == 200
            time.sleep(0.2)
    raise RuntimeError(f"not ready after {START_TIMEOUT_S} s:\n{server.log_tail()}")


def _error_message(response: httpx.Response) -> str | None:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return None
