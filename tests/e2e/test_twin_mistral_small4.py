"""Mistral Small 4's page and rules on its CPU twin."""

from __future__ import annotations

import json

from tests.e2e.seed_checks import (  # noqa: F401  (collected here, run against this twin)
    chat,
    check_stream,
    forced_tool_calls,
    refused,
    test_seed_example_with_curl,
    test_seed_example_with_openai_sdk,
    test_seed_langchain_example,
    test_seed_models_and_health,
)
from tests.e2e.seeds import BOARDWALK_JPG, SMALL4, image_question
from tests.e2e.test_twin_mistral_large3 import TOOLS

PROFILE = "mistral-small-4-119b-2603-tiny"
QUESTION = [{"role": "user", "content": "If a train leaves at 3pm at 60mph, when...?"}]


def prompt_of(response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["prompt_text"]


def test_reasoning_effort_reaches_the_model(twin):
    """The random model cannot reason; what it is asked to do is checked in the prompt."""
    high = prompt_of(
        chat(
            twin,
            SMALL4,
            messages=QUESTION,
            max_tokens=1,
            reasoning_effort="high",
            return_prompt_text=True,
        )
    )
    assert '[MODEL_SETTINGS]{"reasoning_effort": "high"}[/MODEL_SETTINGS]' in high
    default = prompt_of(
        chat(twin, SMALL4, messages=QUESTION, max_tokens=1, return_prompt_text=True)
    )
    assert '[MODEL_SETTINGS]{"reasoning_effort": "none"}[/MODEL_SETTINGS]' in default


def test_reasoning_comes_back_in_the_reasoning_field(twin):
    """Guided decoding makes the random model write [THINK]...[/THINK] and an answer; vLLM's
    mistral reasoning parser must split them into `reasoning` and `content`."""
    out = chat(
        twin,
        SMALL4,
        messages=QUESTION,
        max_tokens=40,
        reasoning_effort="high",
        structured_outputs={"regex": r"\[THINK\][a-z]{3,8}\[/THINK\][a-z]{3,8}"},
    ).json()
    message = out["choices"][0]["message"]
    assert message["reasoning"] and message["reasoning"].isalpha(), message
    assert message["content"] and message["content"].isalpha(), message


def test_reasoning_stream_is_sse_to_done(twin):
    response = chat(
        twin, SMALL4, messages=QUESTION, max_tokens=16, reasoning_effort="high", stream=True
    )
    assert response.status_code == 200
    check_stream(response.text, SMALL4)


def test_only_none_and_high(twin):
    for effort in ("low", "medium"):
        error = refused(
            chat(twin, SMALL4, messages=QUESTION, reasoning_effort=effort),
            "reasoning_effort_values",
        )
        assert "'none', 'high'" in error["message"]


def test_chat_template_is_refused_as_the_seed_says(twin):
    error = refused(
        chat(twin, SMALL4, messages=QUESTION, chat_template="{{ x }}"), "no_request_chat_template"
    )
    assert "built-in chat template" in error["message"]
    error = refused(
        chat(twin, SMALL4, messages=QUESTION, chat_template_kwargs={"reasoning_effort": "high"}),
        "no_chat_template_kwargs",
    )
    assert "Use reasoning_effort" in error["message"]


def test_strict_alternation_and_function_role(twin):
    refused(
        chat(
            twin,
            SMALL4,
            messages=[{"role": "assistant", "content": "hi"}, {"role": "user", "content": "a"}],
        ),
        "strict_alternation",
    )
    refused(
        chat(
            twin,
            SMALL4,
            messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
        ),
        "strict_alternation",
    )
    refused(chat(twin, SMALL4, messages=[{"role": "function", "content": "a"}]), "no_function_role")


def test_five_images_pass_six_do_not(twin):
    five = image_question(BOARDWALK_JPG)
    five[0]["content"] += [five[0]["content"][1]] * 4
    assert chat(twin, SMALL4, messages=five, max_tokens=2).status_code == 200
    six = image_question(BOARDWALK_JPG)
    six[0]["content"] += [six[0]["content"][1]] * 5
    error = refused(chat(twin, SMALL4, messages=six, max_tokens=2), "max_images_per_prompt")
    assert "NIM_MAX_IMAGES_PER_PROMPT=5" in error["message"]


def test_tool_calls(twin):
    weather = [{"role": "user", "content": "What is the weather in Paris?"}]
    calls = forced_tool_calls(
        twin, SMALL4, weather, TOOLS, {"type": "function", "function": {"name": "get_weather"}}
    )
    assert json.loads(calls[0]["function"]["arguments"])["city"] in {"Paris", "Lyon"}
    refused(chat(twin, SMALL4, messages=weather, tool_choice="required"), "tool_choice_needs_tools")
