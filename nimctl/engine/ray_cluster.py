"""The Ray cluster under vLLM's Ray executor, for profiles spread over several machines.

nimctl does no distribution of its own: the leader (`nimctl serve`) starts a Ray head, waits
until every node of the profile has joined, and then hands vLLM an engine configuration with
`distributed_executor_backend="ray"`; vLLM places its workers on the cluster. The other
machines run `nimctl worker`, which waits for the leader and becomes a Ray node
(`ray start --address=... --block`), the pattern of vLLM's and NIM's LeaderWorkerSet
deployments.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from nimctl.errors import ConfigError

logger = logging.getLogger("nimctl.engine.ray")

INSTALL_HINT = "install Ray with the engine (`pip install 'nimctl[multinode]'`)"


def ray_command() -> str:
    """The `ray` launcher of this environment (next to the running Python first)."""
    beside = Path(sys.executable).with_name("ray")
    if beside.exists():
        return str(beside)
    found = shutil.which("ray")
    if found is None:
        raise ConfigError(f"more than one node needs Ray, which is not installed: {INSTALL_HINT}")
    return found


def start_head(port: int, num_gpus: int) -> str:
    """Start a Ray head on this machine; returns the address the workers join."""
    command = [
        ray_command(),
        "start",
        "--head",
        f"--port={port}",
        f"--num-gpus={num_gpus}",
        "--disable-usage-stats",
    ]
    logger.info("starting the Ray head on port %d", port)
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise ConfigError(f"`ray start --head` failed: {done.stderr.strip()[-500:]}")
    return f"{socket.gethostname()}:{port}"


def stop_head() -> None:
    subprocess.run([ray_command(), "stop", "--force"], capture_output=True, timeout=60, check=False)


def wait_for_nodes(
    address: str,
    nodes: int,
    timeout_s: float,
    count_nodes: Callable[[str], int] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Block until `nodes` Ray nodes are alive, or fail naming how many joined."""
    count = count_nodes or _alive_nodes
    began = time.monotonic()
    seen = -1
    while True:
        alive = count(address)
        if alive != seen:
            logger.info("Ray cluster: %d of %d node(s) joined", alive, nodes)
            seen = alive
        if alive >= nodes:
            return
        if time.monotonic() - began > timeout_s:
            raise ConfigError(
                f"only {alive} of {nodes} node(s) joined the Ray cluster at {address} within "
                f"{timeout_s:g} s (NIM_CLUSTER_START_TIMEOUT); are the workers running "
                "`nimctl worker` with this leader's address?"
            )
        sleep(2.0)


def _alive_nodes(address: str) -> int:
    import ray  # only on the multi-node path

    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.WARNING)
    return sum(1 for node in ray.nodes() if node.get("Alive"))


def wait_for_leader(host: str, port: int, timeout_s: float) -> None:
    """Workers may start before the leader's Ray head listens (LeaderCreated startup)."""
    began = time.monotonic()
    while True:
        try:
            with socket.create_connection((host, port), timeout=2):
                return
        except OSError as exc:
            if time.monotonic() - began > timeout_s:
                raise ConfigError(
                    f"the leader's Ray head at {host}:{port} did not answer within "
                    f"{timeout_s:g} s: {exc}"
                ) from None
            time.sleep(2.0)


def worker_command(leader: str, port: int, num_gpus: int) -> list[str]:
    return [
        ray_command(),
        "start",
        f"--address={leader}:{port}",
        f"--num-gpus={num_gpus}",
        "--block",
        "--disable-usage-stats",
    ]


def exec_worker(leader: str, port: int, num_gpus: int) -> None:
    """Become the Ray node process, so that the pod's signals reach Ray directly."""
    command = worker_command(leader, port, num_gpus)
    logger.info("joining the Ray cluster of %s:%d", leader, port)
    os.execv(command[0], command)
