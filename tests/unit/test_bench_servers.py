"""vLLM's server in the benchmarks gets what nimctl's `tiny` profile gives nimctl's engine."""

from __future__ import annotations

import json
from pathlib import Path

from bench import servers
from nimctl.modelgen import idefics3
from nimctl.profiles import ProfileStore, builtin_profiles_dir


def test_vllm_flags_follow_the_tiny_profile(monkeypatch):
    monkeypatch.setattr(idefics3, "ensure_tiny_model", lambda cache: Path("/models/tiny"))
    profile = ProfileStore.load([builtin_profiles_dir()]).get("tiny")
    flags = servers.vllm_arguments(4321)

    def value(flag: str) -> str:
        return flags[flags.index(flag) + 1]

    assert value("--model") == "/models/tiny"
    assert value("--served-model-name") == profile.served_model_name == servers.MODEL
    assert value("--port") == "4321" and value("--host") == "127.0.0.1"
    assert json.loads(value("--limit-mm-per-prompt")) == {"image": profile.max_images_per_prompt}
    assert value("--max-model-len") == str(profile.engine_args["max_model_len"])
    assert value("--max-num-seqs") == str(profile.engine_args["max_num_seqs"])
    assert value("--kv-cache-memory-bytes") == str(profile.engine_args["kv_cache_memory_bytes"])
    assert "--enforce-eager" in flags  # a true flag goes bare
    assert value("--tool-call-parser") == profile.tool_call_parser == "hermes"
    assert "--enable-auto-tool-choice" in flags
    assert "--reasoning-parser" not in flags  # the profile names none
