"""`nimctl download` against a local stand-in for the Hub, and an offline start from its cache.

The model repository is the generated tiny Idefics3 model served by tests/support/fake_hub.py;
`HF_ENDPOINT` points huggingface_hub at it. Downloads run the real CLI in a subprocess (exit
codes and stderr are part of the contract, and huggingface_hub reads HF_ENDPOINT once, when
first imported).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nimctl import modelgen
from tests.support.fake_hub import FakeHub, serving
from tests.support.server import E2E_CACHE, Server, free_port, start_server
from tests.support.tiny import TINY_MODEL

REPO_ID = "nimctl-test/tiny-idefics3"
PROFILE = "tiny-from-hub"
# What the tiny profile's (Hugging Face-format) engine arguments make nimctl fetch: everything
# but the LICENSE.
NEEDED = {
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
}
NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing listens
DOWNLOAD_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return modelgen.ensure_model("tiny-idefics3", E2E_CACHE)


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny profile with its model on the (fake) Hub instead of generated."""
    directory = tmp_path_factory.mktemp("profiles")
    (directory / f"{PROFILE}.yaml").write_text(
        f"name: {PROFILE}\nextends: tiny\ndescription: tiny, fetched from a hub\n"
        f"model: {REPO_ID}\n",
        encoding="utf-8",
    )
    return directory


@pytest.fixture
def hub(model_dir: Path) -> Iterator[FakeHub]:
    with serving(FakeHub.of_directory(REPO_ID, model_dir)) as running:
        yield running


def _env(cache: Path, profiles: Path, endpoint: str, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NIM_", "HF_"))},
        "NIM_CACHE_PATH": str(cache),
        "NIM_PROFILES_PATH": str(profiles),
        "HF_ENDPOINT": endpoint,
        **extra,
    }


def _nimctl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nimctl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=DOWNLOAD_TIMEOUT_S,
        check=False,
    )


def _snapshot(cache: Path) -> Path:
    storage = cache / "huggingface" / "hub" / f"models--{REPO_ID.replace('/', '--')}"
    (snapshot,) = (storage / "snapshots").iterdir()
    return snapshot


def test_download_fetches_the_profiles_files_with_the_token(
    hub: FakeHub, profiles: Path, model_dir: Path, tmp_path: Path
) -> None:
    env = _env(tmp_path, profiles, hub.url, HF_TOKEN="hf_fake_token")
    done = _nimctl("download", "--profile", PROFILE, env=env)

    assert done.returncode == 0, done.stderr
    snapshot = _snapshot(tmp_path)
    assert {p.name for p in snapshot.iterdir()} == NEEDED
    for name in NEEDED:
        assert (snapshot / name).read_bytes() == (model_dir / name).read_bytes(), name
    assert hub.gets("LICENSE") == []
    assert {s.authorization for s in hub.seen if s.path.startswith(f"/{REPO_ID}/")} == {
        "Bearer hf_fake_token"
    }
    assert "done: 1.1 MiB / 1.1 MiB (100%)" in done.stderr
    # huggingface_hub's own record of the branch, for tools given the repo id.
    assert (snapshot.parents[1] / "refs" / "main").read_text() == snapshot.name


def test_a_dropped_connection_is_resumed_with_a_range_request(
    model_dir: Path, profiles: Path, tmp_path: Path
) -> None:
    """huggingface_hub resumes within the run from the bytes it has written (it writes in
    10 MiB chunks, so a weight file larger than that is needed to see a Range request)."""
    shard = os.urandom(24 * 2**20)
    (tmp_path / "repo").mkdir()
    for name in NEEDED:
        (tmp_path / "repo" / name).write_bytes((model_dir / name).read_bytes())
    (tmp_path / "repo" / "extra.safetensors").write_bytes(shard)
    cut = 16 * 2**20
    repo = FakeHub.of_directory(REPO_ID, tmp_path / "repo")
    repo.drop_once["extra.safetensors"] = cut

    with serving(repo):
        done = _nimctl("download", "--profile", PROFILE, env=_env(tmp_path, profiles, repo.url))

    assert done.returncode == 0, done.stderr
    first, second = repo.gets("extra.safetensors")
    assert first.range is None
    assert second.range is not None
    resumed_at = int(second.range.removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= cut  # only what had not arrived is fetched again
    assert (_snapshot(tmp_path) / "extra.safetensors").read_bytes() == shard


def test_a_failed_download_names_the_file_and_a_second_run_fetches_only_the_rest(
    hub: FakeHub, profiles: Path, tmp_path: Path
) -> None:
    env = _env(tmp_path, profiles, hub.url)
    hub.refuse.add("model.safetensors")

    failed = _nimctl("download", "--profile", PROFILE, env=env)

    assert failed.returncode == 1
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("nimctl: download failed: model.safetensors: "), failed.stderr
    storage = _snapshot(tmp_path)
    present = {p.name for p in storage.iterdir()}
    assert "model.safetensors" not in present

    hub.refuse.clear()
    before = len(hub.seen)
    done = _nimctl("download", "--profile", PROFILE, env=env)

    assert done.returncode == 0, done.stderr
    fetched = {name for name in NEEDED if hub.gets(name, since=before)}
    assert fetched == NEEDED - present
    assert {p.name for p in _snapshot(tmp_path).iterdir()} == NEEDED


def test_disabled_download_with_a_missing_file_stops_serve_at_once(
    hub: FakeHub, profiles: Path, tmp_path: Path
) -> None:
    assert (
        _nimctl("download", "--profile", PROFILE, env=_env(tmp_path, profiles, hub.url)).returncode
        == 0
    )
    (_snapshot(tmp_path) / "tokenizer.json").unlink()
    env = _env(tmp_path, profiles, NOWHERE, NIM_DISABLE_MODEL_DOWNLOAD="1")

    served = _nimctl("serve", "--profile", PROFILE, "--port", str(free_port()), env=env)

    assert served.returncode == 2
    message = served.stderr.strip().splitlines()[-1]
    assert "missing tokenizer.json" in message
    assert f"nimctl download --profile {PROFILE}" in message


def test_serve_starts_from_the_downloaded_cache_with_no_hub(
    hub: FakeHub, profiles: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    assert (
        _nimctl("download", "--profile", PROFILE, env=_env(cache, profiles, hub.url)).returncode
        == 0
    )
    asked = len(hub.seen)
    env = {
        "NIM_CACHE_PATH": str(cache),
        "NIM_PROFILES_PATH": str(profiles),
        "NIM_DISABLE_MODEL_DOWNLOAD": "1",
        "HF_ENDPOINT": NOWHERE,
    }

    server = start_server(PROFILE, tmp_path / "nimctl.log", env=env)
    try:
        reply = _hello(server)
    finally:
        code = server.stop()

    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["role"] == "assistant"
    assert code == 0, server.log_tail()
    assert len(hub.seen) == asked  # the real hub endpoint was not asked either
    assert "the hub is not asked" in server.log_path.read_text()


def test_serve_downloads_an_incomplete_cache_as_a_phase_it_reports(
    hub: FakeHub, profiles: Path, tmp_path: Path
) -> None:
    # The weights are held half-sent until readiness has reported the download's bytes.
    seen_bytes = threading.Event()
    hub.hold["model.safetensors"] = seen_bytes

    def watch(message: str) -> None:
        if message.startswith("Service is not ready: downloading weights, ") and " of " in message:
            seen_bytes.set()

    env = {"NIM_CACHE_PATH": str(tmp_path / "cache"), "NIM_PROFILES_PATH": str(profiles)}
    env["HF_ENDPOINT"] = hub.url
    server = start_server(PROFILE, tmp_path / "nimctl.log", env=env, on_not_ready=watch)
    try:
        reply = _hello(server)
    finally:
        code = server.stop()

    assert reply.status_code == 200, reply.text
    assert code == 0, server.log_tail()
    assert seen_bytes.is_set(), server.ready_messages_before_200
    messages = server.ready_messages_before_200
    downloading = [m for m in messages if m.startswith("Service is not ready: downloading")]
    loading = messages.index("Service is not ready: loading weights and starting the engine.")
    assert downloading and messages.index(downloading[-1]) < loading, messages
    assert any(re.search(r", [\d.]+ of [\d.]+ [KMG]?i?B \(\d+ %\)", m) for m in downloading)
    # nimctl fetched the weights, not vLLM: the snapshot is what the engine loaded.
    assert hub.gets("model.safetensors")
    log = server.log_path.read_text()
    assert "start-up: downloading weights" in log
    assert f"weights: {_snapshot(tmp_path / 'cache')}" in log


def _hello(server: Server) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={
            "model": TINY_MODEL,
            "messages": [{"role": "user", "content": "Hello"}],
            "max_tokens": 4,
        },
        timeout=60,
    )
