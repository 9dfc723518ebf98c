"""Mistral Small 4 on vLLM's Mistral-native path (tokenizer_mode mistral, mistral_common
rendering from a Tekken v15 tokenizer), with the tiny text-only Tekken model."""

from __future__ import annotations

import json

from nimctl.modelgen.tekken import control_token_id
from tests.e2e.seed_checks import (  # noqa: F401  (collected here, run against this twin)
    chat,
    refused,
    test_seed_example_with_curl,
    test_seed_example_with_openai_sdk,
    test_seed_models_and_health,
)
from tests.e2e.seeds import BOARDWALK_JPG, SMALL4, image_question

PROFILE = "mistral-small-4-119b-2603-tiny-tekken"
HI = [{"role": "user", "content": "hi"}]


def prompt_ids(server, **body) -> list[int]:
    response = chat(server, SMALL4, max_tokens=1, return_token_ids=True, **body)
    assert response.status_code == 200, response.text
    return response.json()["prompt_token_ids"]


def test_mistral_common_renders_reasoning_effort(twin):
    """The real model's tokenizer writes the setting into the prompt; "none" is the default
    (nimctl sends it explicitly), "high" differs from it."""
    high = prompt_ids(twin, messages=HI, reasoning_effort="high")
    none = prompt_ids(twin, messages=HI, reasoning_effort="none")
    default = prompt_ids(twin, messages=HI)
    assert default == none != high
    settings = control_token_id("[MODEL_SETTINGS]")
    assert settings in high and settings in none


def test_continue_final_message(twin):
    ids = prompt_ids(
        twin,
        messages=[*HI, {"role": "assistant", "content": "One, two,"}],
        add_generation_prompt=False,
        continue_final_message=True,
    )
    assert ids[-1] != control_token_id("</s>")  # the assistant's message stays open


def test_guards_keep_mistral_rules(twin):
    """mistral_common would silently merge two user turns; NIM's page says 400."""
    refused(chat(twin, SMALL4, messages=[*HI, *HI]), "strict_alternation")
    refused(
        chat(twin, SMALL4, messages=HI, chat_template_kwargs={"reasoning_effort": "high"}),
        "no_chat_template_kwargs",
    )
    refused(chat(twin, SMALL4, messages=HI, reasoning_effort="low"), "reasoning_effort_values")


def test_no_images_on_this_text_model(twin):
    error = refused(
        chat(twin, SMALL4, messages=image_question(BOARDWALK_JPG)), "max_images_per_prompt"
    )
    assert "at most 0" in error["message"]


def test_tool_call_through_mistral_grammar(twin):
    """mistral_common's grammar lets free text precede a call; a strict tool, one call, and a
    bias towards [TOOL_CALLS] make the random model call it at once."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": "set_mode",
                "description": "Set the mode",
                "strict": True,
                "parameters": {
                    "type": "object",
                    "properties": {"mode": {"type": "string", "enum": ["fast", "slow"]}},
                    "required": ["mode"],
                    "additionalProperties": False,
                },
            },
        }
    ]
    out = chat(
        twin,
        SMALL4,
        messages=[{"role": "user", "content": "Go fast"}],
        tools=tools,
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=60,
        logit_bias={str(control_token_id("[TOOL_CALLS]")): 100},
    ).json()
    (call,) = out["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "set_mode"
    assert json.loads(call["function"]["arguments"])["mode"] in {"fast", "slow"}
    assert out["choices"][0]["finish_reason"] == "tool_calls"
