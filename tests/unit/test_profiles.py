from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from nimctl.errors import ConfigError
from nimctl.modelgen import BUILTINS
from nimctl.profiles import (
    Gpu,
    Profile,
    ProfileStore,
    apply_settings,
    builtin_profiles_dir,
    fit,
)
from nimctl.settings import NimSettings

SEED_PROFILES = {
    "mistral-large-3-675b-instruct-2512": ("mistralai/mistral-large-3-675b-instruct-2512", 10),
    "mistral-small-4-119b-2603": ("mistralai/mistral-small-4-119b-2603", 5),
    "llama-3.1-nemotron-nano-vl-8b-v1": ("nvidia/llama-3.1-nemotron-nano-vl-8b-v1", 4),
    "qwen3.5-397b-a17b": ("qwen/qwen3.5-397b-a17b", 5),
}
H100 = Gpu("NVIDIA H100 80GB HBM3", 79.6)
H200 = Gpu("NVIDIA H200", 140.4)


@pytest.fixture(scope="module")
def store() -> ProfileStore:
    return ProfileStore.load([builtin_profiles_dir()])


def write(directory: Path, name: str, data: dict) -> None:
    (directory / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, **data}))


BASE = {
    "model": "org/model",
    "served_model_name": "org/model",
    "shm_size": "16GB",
    "max_images_per_prompt": 5,
    "engine_args": {"max_model_len": 4096},
}


CLIENT_CONTRACT = (
    "served_model_name",
    "max_images_per_prompt",
    "max_videos_per_prompt",
    "video_input",
    "image_formats",
    "reasoning_parser",
    "reasoning_default",
    "tool_call_parser",
    "default_chat_template_kwargs",
    "rules",
    "shm_size",
)


def test_shipped_profiles_carry_the_seed_facts(store):
    assert {p.name for p in store} == {
        *SEED_PROFILES,
        *(f"{n}-tiny" for n in SEED_PROFILES),
        "mistral-large-3-675b-instruct-2512-h100-2node",
        "tiny",
    }
    for name, (served, images) in SEED_PROFILES.items():
        profile = store.get(name)
        assert profile.served_model_name == served
        assert profile.max_images_per_prompt == images
        assert profile.max_videos_per_prompt == 0
        assert profile.hardware.gpus >= 1
        assert profile.hardware.gpus * profile.hardware.gpu_memory_gib > (
            profile.hardware.weights_gib
        )
    mistral = [n for n in SEED_PROFILES if n.startswith("mistral")]
    assert all(store.get(n).engine_args["tokenizer_mode"] == "mistral" for n in mistral)
    assert store.get("qwen3.5-397b-a17b").reasoning_default is True
    assert store.get("mistral-small-4-119b-2603").reasoning_default is False
    assert store.get("llama-3.1-nemotron-nano-vl-8b-v1").image_formats == ("jpeg", "png")
    assert store.get("llama-3.1-nemotron-nano-vl-8b-v1").shm_size == "16GB"
    assert store.get("qwen3.5-397b-a17b").shm_size == "32GB"


@pytest.mark.parametrize("seed", sorted(SEED_PROFILES))
def test_cpu_twins_keep_what_clients_see(store, seed):
    original, twin = store.get(seed), store.get(f"{seed}-tiny")
    for field in CLIENT_CONTRACT:
        assert getattr(twin, field) == getattr(original, field), field
    assert twin.model.startswith("builtin:") and twin.model.removeprefix("builtin:") in BUILTINS
    assert twin.hardware.gpus == 0 and fit(twin, []).ok
    assert twin.engine_args["tensor_parallel_size"] == 1


def test_small4_twin_keeps_mistral_native_serving(store):
    """The twin is a checkpoint in Mistral's format: the seed's loading arguments must hold."""
    seed, twin = store.get("mistral-small-4-119b-2603"), store.get("mistral-small-4-119b-2603-tiny")
    for arg in ("tokenizer_mode", "config_format", "load_format"):
        assert twin.engine_args[arg] == seed.engine_args[arg] == "mistral"
    assert twin.model == "builtin:tiny-mistral-small4"


def test_seed_rules(store):
    small4 = store.get("mistral-small-4-119b-2603").rules
    large3 = store.get("mistral-large-3-675b-instruct-2512").rules
    qwen = store.get("qwen3.5-397b-a17b")
    nemotron = store.get("llama-3.1-nemotron-nano-vl-8b-v1").rules
    assert small4.strict_alternation and small4.mistral_tokenizer
    assert small4.reasoning_efforts == ("none", "high")
    assert large3.strict_alternation and large3.reasoning_efforts == ()
    assert qwen.video_input and qwen.rules.request_mm_kwargs
    assert not qwen.rules.stream_include_reasoning_false
    assert nemotron.html_img_tags and nemotron.images_before_text


def test_video_needs_a_video_model(store):
    with pytest.raises(ConfigError, match="takes no video"):
        apply_settings(store.get("mistral-small-4-119b-2603"), NimSettings(max_videos_per_prompt=1))
    qwen = apply_settings(store.get("qwen3.5-397b-a17b"), NimSettings(max_videos_per_prompt=1))
    assert qwen.max_videos_per_prompt == 1


def test_ids_are_stable_hashes_of_content(store, tmp_path):
    for profile in store:
        assert re.fullmatch(r"[0-9a-f]{64}", store.id_of(profile))
    again = ProfileStore.load([builtin_profiles_dir()])
    assert {store.id_of(p) for p in store} == {again.id_of(p) for p in again}
    write(tmp_path, "a", BASE)
    first = ProfileStore.load([tmp_path])
    write(tmp_path, "a", {**BASE, "max_images_per_prompt": 6})
    second = ProfileStore.load([tmp_path])
    assert first.id_of(first.get("a")) != second.id_of(second.get("a"))


def test_select_by_name_id_and_prefix(store):
    tiny = store.get("tiny")
    full = store.id_of(tiny)
    assert store.get(full) is tiny
    assert store.get(full[:12]) is tiny
    assert store.get(full.upper()) is tiny


def test_unknown_profile_lists_the_known_ones(store):
    with pytest.raises(ConfigError, match="NIM_MODEL_PROFILE='nope'.*tiny"):
        store.get("nope")


def test_default_is_tiny_without_gpu_and_explicit_with_gpus(store):
    assert store.select(None, []).name == "tiny"
    with pytest.raises(ConfigError, match="NIM_MODEL_PROFILE is not set.*mistral-small"):
        store.select(None, [H200] * 2)
    assert store.select("qwen3.5-397b-a17b", []).name == "qwen3.5-397b-a17b"


def test_fit_judges_count_and_memory(store):
    small4 = store.get("mistral-small-4-119b-2603")
    assert not fit(small4, []).ok
    assert not fit(small4, [H100] * 4).ok  # 80 GB < 141 GB
    assert fit(small4, [H200] * 2).ok
    assert "needs 2 GPU(s), 1 visible" in fit(small4, [H200]).reason
    assert fit(store.get("tiny"), []).ok


def test_extends_deep_merges_and_overrides(tmp_path):
    write(tmp_path, "parent", {**BASE, "engine_args": {"max_model_len": 4096, "dtype": "bf16"}})
    write(
        tmp_path,
        "child",
        {"extends": "parent", "model": "other/model", "engine_args": {"max_model_len": 512}},
    )
    child = ProfileStore.load([tmp_path]).get("child")
    assert child.model == "other/model"
    assert child.served_model_name == "org/model"
    assert child.engine_args == {"max_model_len": 512, "dtype": "bf16"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**BASE, "max_images": 3}, "bad.yaml max_images: unknown key"),
        ({**BASE, "engine_args": {"limit_mm_per_prompt": {"image": 2}}}, "max_images_per_prompt"),
        ({**BASE, "reasoning_default": True}, "reasoning_default needs a reasoning_parser"),
        ({**BASE, "shm_size": "lots"}, "shm_size"),
        ({**BASE, "image_formats": ["tiff"]}, "image_formats"),
        (
            {**BASE, "engine_args": {"tensor_parallel_size": 4}, "hardware": {"gpus": 2}},
            "hardware.gpus=2 but tensor x pipeline parallel size is 4",
        ),
    ],
)
def test_invalid_profiles_are_refused_with_the_reason(tmp_path, data, message):
    write(tmp_path, "bad", data)
    with pytest.raises(ConfigError, match=re.escape(message)):
        ProfileStore.load([tmp_path])


def test_extends_errors(tmp_path):
    write(tmp_path, "a", {**BASE, "extends": "b"})
    write(tmp_path, "b", {**BASE, "extends": "a"})
    with pytest.raises(ConfigError, match="cycle"):
        ProfileStore.load([tmp_path])
    (tmp_path / "b.yaml").unlink()
    with pytest.raises(ConfigError, match="unknown profile 'b'"):
        ProfileStore.load([tmp_path])


def test_name_must_match_file_and_be_unique(tmp_path):
    (tmp_path / "x.yaml").write_text(yaml.safe_dump({"name": "y", **BASE}))
    with pytest.raises(ConfigError, match="must match the file name"):
        ProfileStore.load([tmp_path])
    other = tmp_path / "more"
    other.mkdir()
    write(tmp_path, "x", BASE)
    (tmp_path / "x.yaml").write_text(yaml.safe_dump({"name": "x", **BASE}))
    write(other, "x", BASE)
    with pytest.raises(ConfigError, match="also defined"):
        ProfileStore.load([tmp_path, other])


def test_settings_override_profile(store):
    qwen = store.get("qwen3.5-397b-a17b")
    settings = NimSettings(
        model_path="/models/qwen",
        served_model_name="my-qwen",
        max_images_per_prompt=2,
        max_videos_per_prompt=1,
        max_model_len=32768,
        enable_kv_cache_reuse=False,
        kvcache_percent=0.8,
        max_num_seqs=16,
        tensor_parallel_size=16,
        guided_decoding_backend="xgrammar",
    )
    effective = apply_settings(qwen, settings)
    assert effective.model == "/models/qwen"
    assert effective.served_model_name == "my-qwen"
    assert (effective.max_images_per_prompt, effective.max_videos_per_prompt) == (2, 1)
    args = effective.engine_args
    assert args["max_model_len"] == 32768
    assert args["enable_prefix_caching"] is False
    assert args["gpu_memory_utilization"] == 0.8
    assert args["max_num_seqs"] == 16
    assert args["tensor_parallel_size"] == 16
    assert args["structured_outputs_config"] == {"backend": "xgrammar"}
    # Same total memory over twice the GPUs.
    assert effective.hardware.gpus == 16 and effective.hardware.gpu_memory_gib == 39.5
    # Unset settings leave the profile alone.
    assert apply_settings(qwen, NimSettings()) == qwen


# --- multi-node ------------------------------------------------------------------------------


def h100s(count: int) -> list[Gpu]:
    return [Gpu("NVIDIA H100 80GB HBM3", 79.6)] * count


def test_two_node_profile_needs_eight_gpus_on_each_node(store):
    profile = store.get("mistral-large-3-675b-instruct-2512-h100-2node")
    assert profile.hardware.nodes == 2 and profile.parallel_size == 16
    assert profile.tag == "vllm-fp8-tp8-pp2-2node"
    assert profile.engine_args["distributed_executor_backend"] == "ray"
    assert fit(profile, h100s(8)).ok
    assert fit(profile, h100s(8)).reason == "uses 8 of 8 GPU(s) on each of 2 nodes"
    assert not fit(profile, h100s(4)).ok
    # The single-node profile needs 141 GB cards: eight H100s are not enough.
    verdict = fit(store.get("mistral-large-3-675b-instruct-2512"), h100s(8))
    assert not verdict.ok and "139 GiB" in verdict.reason


def test_nodes_override_and_executor(store):
    base = store.get("mistral-small-4-119b-2603")
    spread = apply_settings(base, NimSettings(num_compute_nodes=2))
    assert spread.hardware.nodes == 2
    assert spread.engine_args["distributed_executor_backend"] == "ray"
    assert "needs 1 GPU(s) on each of 2 nodes" in fit(spread, h100s(1)).reason
    with pytest.raises(ConfigError, match="Ray executor"):
        apply_settings(base, NimSettings(num_compute_nodes=2, distributed_executor_backend="mp"))
    with pytest.raises(ConfigError, match="must divide"):
        apply_settings(base, NimSettings(num_compute_nodes=3))
    single = apply_settings(base, NimSettings(distributed_executor_backend="mp"))
    assert single.engine_args["distributed_executor_backend"] == "mp"


def test_single_node_ids_did_not_change_when_nodes_was_added(store):
    # Ids are what users pin in NIM_MODEL_PROFILE; adding hardware.nodes must not move them.
    assert store.id_of(store.get("tiny")) == (
        "833566eb66087a6dd34fd0d3fd654437a19788bfb9c318fde2c503c8564c6783"
    )


def test_every_setting_that_feeds_an_engine_argument_reaches_it(store):
    """The `vllm` metadata of a setting (what docs/configuration.md shows) is what it sets."""
    from nimctl.settings import engine_arg_settings

    values = {
        "max_model_len": 1234,
        "tensor_parallel_size": 1,
        "pipeline_parallel_size": 1,
        "enable_kv_cache_reuse": True,
        "kvcache_percent": 0.5,
        "max_num_seqs": 7,
        "distributed_executor_backend": "mp",
        "max_loras": 2,
        "max_cpu_loras": 3,
        "max_lora_rank": 16,
    }
    direct = {f: a for f, a in engine_arg_settings().items() if f not in Profile.model_fields}
    assert set(direct) == set(values)  # a new such setting needs a value here
    # The LoRA limits need LoRA on (NIM_PEFT_SOURCE), which is not an engine argument itself.
    settings = NimSettings(**values, peft_source="/adapters")
    applied = apply_settings(store.get("tiny"), settings).engine_args
    for field, arg in direct.items():
        assert applied[arg] == values[field], field
