from __future__ import annotations

import os
import socket

import pytest

from nimctl.cli import main


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("NIM_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("NIM_CACHE_PATH", str(tmp_path))
    monkeypatch.setattr("nimctl.cli.detect_gpus", lambda: [])


def test_list_profiles_judges_this_machine(capsys):
    assert main(["list-profiles"]) == 0
    out = capsys.readouterr().out
    compatible, incompatible = out.split("Incompatible with system:")
    assert "(tiny, vllm-cpu-bf16-tp1-pp1) [runs on CPU]" in compatible
    assert "(qwen3.5-397b-a17b, vllm-fp8-tp8-pp1) [needs 8 GPU(s), 0 visible]" in incompatible


def test_show_profile_prints_yaml_with_id_and_overrides(capsys, monkeypatch):
    monkeypatch.setenv("NIM_MAX_IMAGES_PER_PROMPT", "2")
    assert main(["show-profile", "mistral-small-4-119b-2603"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# id: ")
    assert "served_model_name: mistralai/mistral-small-4-119b-2603" in out
    assert "max_images_per_prompt: 2" in out


def test_check_prints_effective_settings(capsys, monkeypatch):
    monkeypatch.setenv("NIM_SERVED_MODEL_NAME", "demo")
    monkeypatch.setenv("NIM_MAX_IMAGE_PER_PROMPT", "3")  # typo
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "NIM_SERVED_MODEL_NAME=demo" in out
    assert "served_model_name: demo" in out
    assert "NIM_MAX_IMAGE_PER_PROMPT is not a nimctl setting" in out


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["serve"], {"NIM_MAX_IMAGES_PER_PROMPT": "-1"}, "invalid NIM_MAX_IMAGES_PER_PROMPT='-1'"),
        (["serve", "--port", "0"], {}, "invalid --server-port=0"),
        (["serve", "--profile", "nope"], {}, "invalid NIM_MODEL_PROFILE='nope'"),
        (["serve", "--profile", "qwen3.5-397b-a17b"], {}, "needs 8 GPU(s), 0 visible"),
        (["check"], {"NIM_LOG_LEVEL": "LOUD"}, "invalid NIM_LOG_LEVEL='LOUD'"),
        # What would stop `serve` once the app is built stops `check` before it.
        (["check"], {"NIM_MEDIA_ALLOWLIST": "10.0.0.0/33"}, "invalid NIM_MEDIA_ALLOWLIST="),
        (["serve"], {"NIM_MEDIA_ALLOWLIST": "ok.example, *"}, "'*' is not a host name"),
        (["check"], {"NIM_PASSTHROUGH_ARGS": "--no-such-flag 1"}, "invalid NIM_PASSTHROUGH_ARGS="),
        (["check"], {"NIM_TOOL_CALL_PARSER": "nope"}, "invalid NIM_TOOL_CALL_PARSER='nope'"),
    ],
)
def test_config_errors_are_one_line_and_exit_2(capsys, monkeypatch, argv, env, expected):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nimctl: ")
    assert expected in err


def test_taken_port_fails_before_loading(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--host", "127.0.0.1", "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


async def test_accepted_connections_have_tcp_nodelay():
    """Without TCP_NODELAY every answer on a kept-alive connection waits for a delayed ACK."""
    import asyncio

    from nimctl.cli import _bind

    sock = _bind("127.0.0.1", 0)
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            peer = transport.get_extra_info("socket")
            accepted.set_result(peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
    try:
        port = sock.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(accepted, 30) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


def test_the_startup_heap_is_frozen_out_of_the_collectors_sight():
    import gc

    from nimctl.cli import freeze_startup_heap

    before = gc.get_freeze_count()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()


def test_k8s_refuses_values_that_would_stop_every_pod(capsys, tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text("env:\n  NIM_KVCACHE_PERCENT: '2'\n  NIM_LOG_LEVEL: LOUD\n")
    assert main(["k8s", "--profile", "tiny", "--values", str(values)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "invalid values env.NIM_KVCACHE_PERCENT='2'" in err
    assert "invalid values env.NIM_LOG_LEVEL='LOUD'" in err
