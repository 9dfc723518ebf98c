"""What `nimctl download` fetches for a profile, and how `serve` judges a cache complete.

The downloads themselves, against a local stand-in for the Hub, are in tests/e2e/test_download.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nimctl.cli import main
from nimctl.download import (
    Files,
    HubModel,
    Outcome,
    _Meter,
    cached_snapshot,
    hub_model,
    manifest_path,
    needed_files,
)
from nimctl.engine.environment import prepare_engine_environment
from nimctl.errors import ConfigError
from nimctl.profiles import ProfileStore, builtin_profiles_dir
from nimctl.resume import partial_path
from nimctl.settings import NimSettings

REPO = "org/model"
COMMIT = "c" * 40
MISTRAL = "mistral-small-4-119b-2603"


@pytest.fixture(scope="module")
def store() -> ProfileStore:
    return ProfileStore.load([builtin_profiles_dir()])


def _profile(store: ProfileStore, model: str = REPO, name: str = "tiny"):
    return store.get(name).model_copy(update={"model": model, "name": "hubby"})


def _wanted(files: Files, names: list[str]) -> set[str]:
    return {n for n in names if files.wanted(n)}


REPO_FILES = [
    "config.json",
    "generation_config.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "preprocessor_config.json",
    "chat_template.jinja",
    "merges.txt",
    "params.json",
    "tekken.json",
    "consolidated.safetensors",
    "original/consolidated.00.pth",
    "pytorch_model.bin",
    "model.gguf",
    "README.md",
    "modeling_custom.py",
]


def test_hugging_face_format_fetches_weights_configs_and_tokenizer_only():
    assert _wanted(needed_files({}), REPO_FILES) == {
        "config.json",
        "generation_config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "tokenizer.model",
        "preprocessor_config.json",
        "chat_template.jinja",
        "merges.txt",
        "params.json",  # a JSON file like the others: small
        "tekken.json",
    }


def test_mistral_format_fetches_the_consolidated_checkpoint_only(store):
    files = needed_files(store.get(MISTRAL).engine_args)
    assert _wanted(files, REPO_FILES) == {
        "params.json",
        "tekken.json",
        "tokenizer.model",
        "consolidated.safetensors",
        "generation_config.json",
        "chat_template.jinja",
    }


def test_a_mistral_tokenizer_over_hugging_face_weights_adds_its_vocabulary():
    files = needed_files({"tokenizer_mode": "mistral"})
    assert {"tekken.json", "model-00001-of-00002.safetensors"} <= _wanted(files, REPO_FILES)
    assert "consolidated.safetensors" not in _wanted(files, REPO_FILES)


def test_remote_code_is_fetched_only_when_trusted():
    assert "modeling_custom.py" not in _wanted(needed_files({}), REPO_FILES)
    assert "modeling_custom.py" in _wanted(needed_files({"trust_remote_code": True}), REPO_FILES)


def test_only_hub_models_are_downloaded(store):
    assert hub_model(store.get("tiny")) is None  # builtin: generated
    assert hub_model(_profile(store, "/models/local")) is None
    assert hub_model(_profile(store, "./local")) is None
    assert hub_model(_profile(store)) == HubModel(REPO, "main")


def _settings(tmp_path: Path, **kw: object) -> NimSettings:
    return NimSettings(cache_path=tmp_path, **kw)


def _download(tmp_path: Path, files: dict[str, bytes], listed: dict[str, int] | None = None):
    """A cache as `nimctl download` leaves it: snapshot files and the manifest."""
    settings = _settings(tmp_path)
    snapshot = tmp_path / "huggingface/hub/models--org--model/snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    path = manifest_path(settings, HubModel(REPO, "main"))
    path.parent.mkdir(parents=True)
    sizes = listed or {name: len(data) for name, data in files.items()}
    path.write_text(json.dumps({"commit": COMMIT, "files": sizes}))
    return snapshot


COMPLETE = {
    "config.json": b"{}",
    "model.safetensors": b"weights",
    "tokenizer.json": b"{}",
    "README.md": b"not needed",
}


def test_a_complete_cache_is_the_snapshot_directory(store, tmp_path):
    snapshot = _download(tmp_path, COMPLETE)
    profile = _profile(store)
    assert cached_snapshot(profile, _settings(tmp_path)) == snapshot
    assert cached_snapshot(profile, _settings(tmp_path, disable_model_download=True)) == snapshot


def test_files_the_profile_does_not_need_may_be_absent(store, tmp_path):
    listed = {**{n: len(d) for n, d in COMPLETE.items()}, "pytorch_model.bin": 10}
    snapshot = _download(tmp_path, COMPLETE, listed)
    assert cached_snapshot(_profile(store), _settings(tmp_path)) == snapshot


def test_an_incomplete_cache_is_downloaded_unless_downloads_are_disabled(store, tmp_path):
    _download(tmp_path, {"config.json": b"{}"}, {n: len(d) for n, d in COMPLETE.items()})
    profile = _profile(store)
    assert cached_snapshot(profile, _settings(tmp_path)) is None
    with pytest.raises(ConfigError) as raised:
        cached_snapshot(profile, _settings(tmp_path, disable_model_download=True))
    message = str(raised.value)
    assert "NIM_DISABLE_MODEL_DOWNLOAD is set but org/model@main" in message
    assert "missing model.safetensors and 1 more" in message
    assert "run `nimctl download --profile hubby`" in message


def test_a_truncated_file_is_missing(store, tmp_path):
    _download(tmp_path, COMPLETE, {**{n: len(d) for n, d in COMPLETE.items()}, "config.json": 9})
    with pytest.raises(ConfigError, match="missing config.json;"):
        cached_snapshot(_profile(store), _settings(tmp_path, disable_model_download=True))


def test_nothing_downloaded_is_named(store, tmp_path):
    with pytest.raises(ConfigError, match=r"missing models--org--model@main\.json \(nothing"):
        cached_snapshot(_profile(store), _settings(tmp_path, disable_model_download=True))


def test_generated_and_local_models_are_not_checked(store, tmp_path):
    settings = _settings(tmp_path, disable_model_download=True)
    assert cached_snapshot(store.get("tiny"), settings) is None
    assert cached_snapshot(_profile(store, str(tmp_path)), settings) is None


def test_a_complete_cache_takes_vllm_offline(store, tmp_path):
    env: dict[str, str] = {"HF_HUB_OFFLINE": "0"}
    prepare_engine_environment(_settings(tmp_path), store.get("tiny"), env, offline=True)
    assert env["HF_HUB_OFFLINE"] == "1"
    env = {}
    prepare_engine_environment(_settings(tmp_path), store.get("tiny"), env)
    assert "HF_HUB_OFFLINE" not in env


def test_progress_reports_bytes_rate_and_eta(tmp_path):
    storage = tmp_path / "models--org--model"
    (storage / "snapshots" / COMMIT).mkdir(parents=True)
    (storage / "blobs").mkdir()
    meter = _Meter(
        storage,
        COMMIT,
        {"a.safetensors": 3 * 2**20, "config.json": 2**20},
        4 * 2**20,
        tmp_path / "staging",
    )
    assert meter.line().startswith("downloading: 0 B / 4.0 MiB (0%), 0 B/s")
    (storage / "snapshots" / COMMIT / "config.json").write_bytes(b"x" * 2**20)
    (storage / "blobs" / "abc.1234.incomplete").write_bytes(b"x" * 2**20)
    line = meter.line()
    assert line.startswith("downloading: 2.0 MiB / 4.0 MiB (50%), ")
    assert "/s, ETA " in line


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bytes_kept_by_an_earlier_run_are_done_but_not_speed(tmp_path):
    storage, staging = tmp_path / "models--org--model", tmp_path / "staging"
    (storage / "blobs").mkdir(parents=True)
    staging.mkdir()
    partial = partial_path(staging, "a.safetensors")
    partial.write_bytes(b"x" * 4 * 2**20)  # kept by a killed run
    (storage / "blobs" / "abc.1234.incomplete").write_bytes(b"x" * 2**20)  # orphaned by one
    clock = _Clock()
    meter = _Meter(storage, COMMIT, {"a.safetensors": 8 * 2**20}, 8 * 2**20, staging, clock)

    clock.now = 10.0
    assert meter.line() == "downloading: 4.0 MiB / 8.0 MiB (50%), 0 B/s"
    with partial.open("ab") as more:
        more.write(b"x" * 2**20)
    # 1 MiB in this run's 10 s: 3 MiB left at that rate.
    assert meter.line() == "downloading: 5.0 MiB / 8.0 MiB (62%), 102.4 KiB/s, ETA 0m30s"


def test_bytes_fetched_again_keep_the_rate_this_runs(tmp_path):
    storage, staging = tmp_path / "models--org--model", tmp_path / "staging"
    staging.mkdir(parents=True)
    partial = partial_path(staging, "a.safetensors")
    partial.write_bytes(b"x" * 4 * 2**20)
    clock = _Clock()
    meter = _Meter(storage, COMMIT, {"a.safetensors": 8 * 2**20}, 8 * 2**20, staging, clock)
    with partial.open("ab") as more:
        more.write(b"x" * 2**20)
    clock.now = 10.0

    meter.lost(5 * 2**20)  # the server answered the Range with the whole file
    partial.write_bytes(b"x" * 2 * 2**20)
    clock.now = 20.0

    # 3 MiB received in 20 s, whatever became of them: 6 MiB left at that rate.
    assert meter.line() == "downloading: 2.0 MiB / 8.0 MiB (25%), 153.6 KiB/s, ETA 0m40s"


def test_download_of_a_local_directory_is_a_config_error(store, tmp_path, monkeypatch, capsys):
    (tmp_path / "local.yaml").write_text(f"name: local\nextends: tiny\nmodel: {tmp_path}\n")
    monkeypatch.setenv("NIM_PROFILES_PATH", str(tmp_path))
    monkeypatch.setenv("NIM_CACHE_PATH", str(tmp_path / "cache"))
    assert main(["download", "--profile", "local"]) == 2
    assert "nothing to download" in capsys.readouterr().err


def test_check_says_where_the_weights_come_from(store, tmp_path, monkeypatch, capsys):
    (tmp_path / "hubby.yaml").write_text(f"name: hubby\nextends: tiny\nmodel: {REPO}\n")
    monkeypatch.setenv("NIM_PROFILES_PATH", str(tmp_path))
    monkeypatch.setenv("NIM_CACHE_PATH", str(tmp_path))
    assert main(["check", "--profile", "hubby"]) == 0
    assert "# weights: fetched from the hub" in capsys.readouterr().out
    monkeypatch.setenv("NIM_DISABLE_MODEL_DOWNLOAD", "1")
    assert main(["check", "--profile", "hubby"]) == 2
    assert "nimctl download --profile hubby" in capsys.readouterr().err


def test_download_all_fetches_each_hub_repository_once(store, tmp_path, monkeypatch):
    fetched: list[str] = []

    def record(profile, settings):
        fetched.append(profile.name)
        return Outcome(tmp_path, 0, 0)

    monkeypatch.setattr("nimctl.download.download", record)
    monkeypatch.setenv("NIM_CACHE_PATH", str(tmp_path))
    assert main(["download", "--all"]) == 0
    # No twin (generated), and the 2-node Mistral Large 3 shares its repository and files.
    assert fetched == [
        "llama-3.1-nemotron-nano-vl-8b-v1",
        "mistral-large-3-675b-instruct-2512",
        "mistral-small-4-119b-2603",
        "qwen3.5-397b-a17b",
    ]
