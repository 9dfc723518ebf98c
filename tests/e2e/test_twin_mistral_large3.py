"""Mistral Large 3's page and rules on its CPU twin."""

from __future__ import annotations

import json

import httpx

from tests.e2e.seed_checks import (  # noqa: F401  (collected here, run against this twin)
    chat,
    forced_tool_calls,
    refused,
    test_seed_example_with_curl,
    test_seed_example_with_openai_sdk,
    test_seed_langchain_example,
    test_seed_models_and_health,
)
from tests.e2e.seeds import BOARDWALK_JPG, LARGE3, TOOLS, image_question

PROFILE = "mistral-large-3-675b-instruct-2512-tiny"


def test_api_reference_health_and_models(twin):
    live = httpx.get(f"{twin.base_url}/v1/health/live")
    assert live.status_code == 200
    assert httpx.get(f"{twin.base_url}/v1/models").json()["object"] == "list"


def test_roles_must_alternate(twin):
    error = refused(
        chat(
            twin,
            LARGE3,
            messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        ),
        "strict_alternation",
    )
    assert error["param"] == "messages[1].role"
    assert "Merge consecutive user messages" in error["message"]


def test_conversation_may_end_with_assistant_only_to_continue_it(twin):
    messages = [
        {"role": "user", "content": "Tell a story"},
        {"role": "assistant", "content": "Once upon a time"},
    ]
    refused(chat(twin, LARGE3, messages=messages, max_tokens=4), "strict_alternation")
    ok = chat(
        twin,
        LARGE3,
        messages=messages,
        max_tokens=4,
        add_generation_prompt=False,
        continue_final_message=True,
        return_prompt_text=True,
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["prompt_text"].endswith("[INST]Tell a story[/INST]Once upon a time")


def test_function_role_is_refused(twin):
    error = refused(
        chat(
            twin,
            LARGE3,
            messages=[
                {"role": "user", "content": "a"},
                {"role": "function", "name": "f", "content": "1"},
            ],
        ),
        "no_function_role",
    )
    assert "role 'tool'" in error["message"]


def test_request_chat_template_and_kwargs_are_refused(twin):
    user = [{"role": "user", "content": "hi"}]
    refused(
        chat(twin, LARGE3, messages=user, chat_template="{{ messages }}"),
        "no_request_chat_template",
    )
    error = refused(
        chat(twin, LARGE3, messages=user, chat_template_kwargs={"enable_thinking": True}),
        "no_chat_template_kwargs",
    )
    assert "Mistral tokenizer" in error["message"]


def test_no_reasoning_effort_on_an_instruct_model(twin):
    refused(
        chat(twin, LARGE3, messages=[{"role": "user", "content": "hi"}], reasoning_effort="high"),
        "reasoning_effort_values",
    )


def test_ten_images_pass_eleven_do_not(twin):
    ten = image_question(BOARDWALK_JPG)
    ten[0]["content"] += [ten[0]["content"][1]] * 9
    ok = chat(twin, LARGE3, messages=ten, max_tokens=2)
    assert ok.status_code == 200, ok.text
    eleven = image_question(BOARDWALK_JPG)
    eleven[0]["content"] += [eleven[0]["content"][1]] * 10
    error = refused(chat(twin, LARGE3, messages=eleven, max_tokens=2), "max_images_per_prompt")
    assert "NIM_MAX_IMAGES_PER_PROMPT=10" in error["message"]


def test_tool_calls_with_every_tool_choice(twin):
    weather = [{"role": "user", "content": "What is the weather in Paris?"}]
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        calls = forced_tool_calls(twin, LARGE3, weather, TOOLS, choice)
        assert all(c["function"]["name"] == "get_weather" for c in calls)
        assert all(
            json.loads(c["function"]["arguments"])["city"] in {"Paris", "Lyon"} for c in calls
        )
    for choice in ("auto", "none"):
        assert (
            chat(
                twin, LARGE3, messages=weather, tools=TOOLS, tool_choice=choice, max_tokens=8
            ).status_code
            == 200
        )
    refused(chat(twin, LARGE3, messages=weather, tool_choice="auto"), "tool_choice_needs_tools")


def test_tool_results_take_the_assistants_turn(twin):
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    response = chat(
        twin,
        LARGE3,
        tools=TOOLS,
        max_tokens=4,
        return_prompt_text=True,
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "21C and sunny"},
        ],
    )
    assert response.status_code == 200, response.text
    prompt = response.json()["prompt_text"]
    assert "[TOOL_CALLS]" in prompt and "[TOOL_RESULTS]21C and sunny[/TOOL_RESULTS]" in prompt
