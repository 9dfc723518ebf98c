from __future__ import annotations

import dataclasses

import pytest

from nimctl.config import effective_config
from nimctl.errors import ConfigError
from nimctl.settings import NimSettings


@pytest.fixture(autouse=True)
def no_nim_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("NIM_"):
            monkeypatch.delenv(key)


def test_one_immutable_object_with_settings_applied():
    config = effective_config(NimSettings(max_images_per_prompt=2, max_num_seqs=3), gpus=[])
    assert config.written.name == config.profile.name == "tiny"  # no GPU: the CPU demo
    assert config.profile.max_images_per_prompt == 2
    assert config.written.max_images_per_prompt != 2  # as the YAML says
    assert config.profile.engine_args["max_num_seqs"] == 3
    assert config.profile_id == config.store.id_of(config.written)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.profile = config.written  # type: ignore[misc]


def test_a_named_profile_is_not_judged_against_this_machine():
    config = effective_config(NimSettings(), name="qwen3.5-397b-a17b")
    assert config.profile.hardware.gpus == 8


def test_a_profile_that_does_not_fit_stops_with_what_would():
    with pytest.raises(ConfigError, match="cannot run on this machine: .*that fit: .*tiny"):
        effective_config(NimSettings(model_profile="qwen3.5-397b-a17b"), gpus=[])
