"""`nimctl download` against a local stand-in for the Hub, and an offline start from its cache.

The model repository is the generated tiny Idefics3 model served by tests/support/fake_hub.py;
`HF_ENDPOINT` points huggingface_hub at it. Downloads run the real CLI in a subprocess (exit
codes and stderr are part of the contract, and huggingface_hub reads HF_ENDPOINT once, when
first imported).
"""

from __future__ import annotations

import hashlib
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
from nimctl.download import HubModel, staging_dir
from nimctl.resume import partial_path
from nimctl.settings import NimSettings
from tests.support.fake_hub import FakeHub, RepoFile, serving
from tests.support.server import E2E_CACHE, Server, free_port, start_server
from tests.support.tiny import TINY_MODEL
from tests.support.waiting import wait_for

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
# A weight file beside the tiny model's, large enough to be cut off part-way.
SHARD = "extra.safetensors"
SHARD_SIZE = 24 * 2**20
# Where the hub stops sending the shard for a run to be killed: not on a chunk boundary.
CUT = 9 * 2**20 + 12345
EMPTY = "added_tokens.json"
# A stalled read must outlast the test's waits: huggingface_hub's default is 10 s.
SLOW_READS = {"HF_HUB_DOWNLOAD_TIMEOUT": "600"}


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


def _repo(model_dir: Path, directory: Path, shard: bytes) -> FakeHub:
    """The tiny model's repository with `shard` added as SHARD, and an empty file."""
    directory.mkdir()
    for name in NEEDED:
        (directory / name).write_bytes((model_dir / name).read_bytes())
    (directory / SHARD).write_bytes(shard)
    (directory / EMPTY).write_bytes(b"")
    return FakeHub.of_directory(REPO_ID, directory)


def _partial(cache: Path, commit: str) -> Path:
    """Where nimctl keeps the shard's bytes between runs."""
    staging = staging_dir(NimSettings(cache_path=cache), HubModel(REPO_ID, "main"), commit)
    return partial_path(staging, SHARD)


def _holds(partial: Path, size: int) -> bool:
    return partial.is_file() and partial.stat().st_size == size


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "nimctl", "download", "--profile", PROFILE],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


def _cut_off(repo: FakeHub, env: dict[str, str], cache: Path, log: Path) -> Path:
    """A `nimctl download` killed outright (SIGKILL: no handler runs) once CUT bytes of the
    shard are on disk; the partial file it left."""
    reached = repo.stall_at(SHARD, CUT)
    run = _start(env, log)
    partial = _partial(cache, repo.commit)
    try:
        assert reached.wait(DOWNLOAD_TIMEOUT_S), log.read_text()
        wait_for(lambda: _holds(partial, CUT), DOWNLOAD_TIMEOUT_S)
    finally:
        run.kill()
        run.wait()
    return partial


def _cached(cache: Path, name: str, commit: str) -> Path:
    """The file as huggingface_hub's own cache lookup finds it."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        REPO_ID, name, cache_dir=cache / "huggingface" / "hub", revision=commit
    )
    assert isinstance(found, str), found
    return Path(found)


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
    """The run continues from the bytes it has written."""
    shard = os.urandom(SHARD_SIZE)
    cut = 16 * 2**20
    repo = _repo(model_dir, tmp_path / "repo", shard)
    repo.drop_once[SHARD] = cut

    with serving(repo):
        done = _nimctl("download", "--profile", PROFILE, env=_env(tmp_path, profiles, repo.url))

    assert done.returncode == 0, done.stderr
    first, second = repo.gets(SHARD)
    assert first.range is None
    assert second.range is not None
    resumed_at = int(second.range.removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= cut  # only what had not arrived is fetched again
    assert (_snapshot(tmp_path) / SHARD).read_bytes() == shard


def test_a_killed_download_is_continued_by_the_next_run_from_the_bytes_kept(
    model_dir: Path, profiles: Path, tmp_path: Path
) -> None:
    shard = os.urandom(SHARD_SIZE)
    sha256 = hashlib.sha256(shard).hexdigest()
    repo = _repo(model_dir, tmp_path / "repo", shard)
    cache = tmp_path / "cache"

    with serving(repo):
        env = _env(cache, profiles, repo.url, **SLOW_READS)
        partial = _cut_off(repo, env, cache, tmp_path / "killed.log")
        asked, served = len(repo.seen), repo.served[SHARD]
        done = _nimctl("download", "--profile", PROFILE, env=env)

    assert done.returncode == 0, done.stderr
    (rest,) = repo.gets(SHARD, since=asked)
    assert rest.range == f"bytes={CUT}-"  # from the very byte the killed run kept
    assert rest.if_range == f'"{sha256}"'  # and only if the bytes are still that file's
    assert repo.served[SHARD] - served == SHARD_SIZE - CUT
    assert f"{SHARD}: continuing from byte {CUT} of {SHARD_SIZE}" in done.stderr
    # Where huggingface_hub expects it, as hf_hub_download leaves a file: a link to the blob.
    found = _cached(cache, SHARD, repo.commit)
    assert found.read_bytes() == shard
    assert found.is_symlink()
    assert found.resolve() == (found.parents[2] / "blobs" / sha256).resolve()
    assert not partial.exists()
    assert _cached(cache, EMPTY, repo.commit).read_bytes() == b""


@pytest.mark.parametrize("change", ["etag", "commit"])
def test_a_partial_of_another_version_is_discarded(
    change: str, model_dir: Path, profiles: Path, tmp_path: Path
) -> None:
    repo = _repo(model_dir, tmp_path / "repo", os.urandom(SHARD_SIZE))
    cache = tmp_path / "cache"

    with serving(repo):
        env = _env(cache, profiles, repo.url, **SLOW_READS)
        partial = _cut_off(repo, env, cache, tmp_path / "killed.log")
        if change == "etag":  # new bytes under the same commit (a mirror re-synced, say)
            repo.files[SHARD] = RepoFile(SHARD, os.urandom(SHARD_SIZE))
        else:  # the branch moved on
            repo.commit = "f" * 40
        asked = len(repo.seen)
        done = _nimctl("download", "--profile", PROFILE, env=env)

    assert done.returncode == 0, done.stderr
    (whole,) = repo.gets(SHARD, since=asked)
    assert whole.range is None
    assert _cached(cache, SHARD, repo.commit).read_bytes() == repo.files[SHARD].data
    assert not partial.exists()


def _resumed_after(
    change: str, model_dir: Path, profiles: Path, tmp_path: Path
) -> tuple[FakeHub, Path, bytes, int, int, subprocess.CompletedProcess[str]]:
    """A run cut off at CUT, the hub's switch `change` turned on, then a second run: the hub, the
    cache, the shard, the requests and shard bytes seen before the second run, and that run."""
    shard = os.urandom(SHARD_SIZE)
    repo = _repo(model_dir, tmp_path / "repo", shard)
    cache = tmp_path / "cache"
    with serving(repo):
        env = _env(cache, profiles, repo.url, **SLOW_READS)
        _cut_off(repo, env, cache, tmp_path / "killed.log")
        setattr(repo, change, True)
        asked, served = len(repo.seen), repo.served[SHARD]
        done = _nimctl("download", "--profile", PROFILE, env=env)
    return repo, cache, shard, asked, served, done


def test_a_server_ignoring_the_range_restarts_the_file(
    model_dir: Path, profiles: Path, tmp_path: Path
) -> None:
    repo, cache, shard, asked, served, done = _resumed_after(
        "ignore_range", model_dir, profiles, tmp_path
    )

    assert done.returncode == 0, done.stderr
    (whole,) = repo.gets(SHARD, since=asked)
    assert whole.range == f"bytes={CUT}-"
    assert repo.served[SHARD] - served == SHARD_SIZE  # answered 200: the whole file, once
    assert "the server sent the whole file, not the rest: starting over" in done.stderr
    assert _cached(cache, SHARD, repo.commit).read_bytes() == shard


def test_a_server_refusing_the_range_restarts_the_file(
    model_dir: Path, profiles: Path, tmp_path: Path
) -> None:
    """416 (a copy shorter than the bytes kept): the kept bytes cannot be of that copy, so the
    file starts over at once, not on every later run."""
    repo, cache, shard, asked, _, done = _resumed_after(
        "refuse_range", model_dir, profiles, tmp_path
    )

    assert done.returncode == 0, done.stderr
    refused, whole = repo.gets(SHARD, since=asked)
    assert refused.range == f"bytes={CUT}-"
    assert whole.range is None
    assert f"the server has no byte {CUT} of it (416): starting over" in done.stderr
    assert _cached(cache, SHARD, repo.commit).read_bytes() == shard


def test_two_runs_on_one_cache_share_a_file_through_its_lock(
    model_dir: Path, profiles: Path, tmp_path: Path
) -> None:
    """Two pods on one volume: the second waits for the first's file, and when the first is
    killed it continues the bytes that one left rather than writing beside it."""
    shard = os.urandom(SHARD_SIZE)
    repo = _repo(model_dir, tmp_path / "repo", shard)
    cache = tmp_path / "cache"

    with serving(repo):
        env = _env(cache, profiles, repo.url, **SLOW_READS)
        reached = repo.stall_at(SHARD, CUT)
        first = _start(env, tmp_path / "first.log")
        try:
            assert reached.wait(DOWNLOAD_TIMEOUT_S)
            wait_for(lambda: _holds(_partial(cache, repo.commit), CUT), DOWNLOAD_TIMEOUT_S)
            second = _start(env, tmp_path / "second.log")
            waiting = f"{SHARD}: another run is fetching it; waiting for that run"
            wait_for(lambda: waiting in (tmp_path / "second.log").read_text(), DOWNLOAD_TIMEOUT_S)
        finally:
            first.kill()
            first.wait()
        killed = len(repo.seen)
        assert second.wait(DOWNLOAD_TIMEOUT_S) == 0, (tmp_path / "second.log").read_text()

    # Nothing from the second while the first held the file, then only the rest.
    assert len(repo.gets(SHARD)) == 2
    (rest,) = repo.gets(SHARD, since=killed)
    assert rest.range == f"bytes={CUT}-"
    assert _cached(cache, SHARD, repo.commit).read_bytes() == shard


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
