"""Mistral Large 3's page and rules on its CPU twin, on the real serving path.

The twin is Mistral Large 3's architecture in Mistral's native format (vLLM's
PixtralForConditionalGeneration over MistralLarge3ForCausalLM) with the seed's engine arguments:
mistral_common renders every prompt from the Tekken v13 tokenizer, and vLLM's mistral tool parser
reads its control tokens. Its weights are random, so what the model is asked to do is checked in
what reaches it (prompt token ids and counts), and its output only in structure.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import httpx
import pytest

from nimctl.modelgen.mistral import LARGE3 as LARGE3_TWIN
from nimctl.modelgen.tekken import control_token_id
from tests.support.media import image_data_url
from tests.support.seed_checks import (  # noqa: F401  (collected here, run against this twin)
    chat,
    refused,
    test_seed_example_with_curl,
    test_seed_example_with_openai_sdk,
    test_seed_langchain_example,
    test_seed_models_and_health,
)
from tests.support.seeds import BOARDWALK_JPG, LARGE3, TOOLS, image_question
from tests.support.server import E2E_CACHE

# Real-architecture twins run in `make test-twins` (see the Makefile), not `make test`.
pytestmark = pytest.mark.real_twin
PROFILE = "mistral-large-3-675b-instruct-2512-tiny"
QUESTION = [{"role": "user", "content": "Tell a story"}]
SQUARE_PNG = image_data_url("PNG", (64, 64), "red")


@cache
def tokenizer() -> Any:
    """The twin's tokenizer, from the tekken.json the server built."""
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    path = LARGE3_TWIN.model_dir(E2E_CACHE) / "tekken.json"
    return MistralTokenizer.from_file(str(path))


def prompt_text(server: Any, **body: Any) -> str:
    """The prompt the engine saw, decoded from its token ids: with a Mistral tokenizer vLLM
    renders token ids only, so `return_prompt_text` has no text to return."""
    from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy

    response = chat(server, LARGE3, max_tokens=1, return_token_ids=True, **body)
    assert response.status_code == 200, response.text
    ids = response.json()["prompt_token_ids"]
    return tokenizer().decode(ids, special_token_policy=SpecialTokenPolicy.KEEP)


def test_served_on_the_real_architecture(twin):
    log = twin.log_path.read_text(errors="replace")
    assert "Resolved architecture: PixtralForConditionalGeneration" in log
    tekken = tokenizer().instruct_tokenizer.tokenizer
    assert (tekken.version.value, tekken.model_settings_builder) == ("v13", None)


def test_an_instruct_prompt_has_no_model_settings(twin):
    assert prompt_text(twin, messages=QUESTION) == "<s>[INST]Tell a story[/INST]"


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
    text = prompt_text(
        twin, messages=messages, add_generation_prompt=False, continue_final_message=True
    )
    assert text == "<s>[INST]Tell a story[/INST]Once upon a time"  # no </s>: it continues


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


def whitespace_ids() -> list[int]:
    from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy

    tekken = tokenizer().instruct_tokenizer.tokenizer
    pieces = range(tekken.num_special_tokens, tekken.n_words)
    return [i for i in pieces if not tekken.id_to_byte_piece(i, SpecialTokenPolicy.KEEP).strip()]


def test_tool_calls_with_every_tool_choice(twin):
    """mistral_common's tool grammar lets free text come before a call, so a random model would
    write text until max_tokens; a bias on [TOOL_CALLS] makes it open a call at once, and the
    grammar and vLLM's mistral tool parser do the rest. As in mistral_common, only a named choice
    or a strict tool holds the name ("required" over non-strict tools admits any name), and a
    strict tool's arguments follow its schema (whitespace banned, or the random model writes
    blanks until max_tokens)."""
    weather = [{"role": "user", "content": "What is the weather in Paris?"}]
    calls_first = {str(control_token_id("[TOOL_CALLS]")): 100}
    strict = [{**TOOLS[0], "function": {**TOOLS[0]["function"], "strict": True}}]
    strict[0]["function"]["parameters"] = {
        **TOOLS[0]["function"]["parameters"],
        "additionalProperties": False,
    }
    cases = [
        (TOOLS, {"type": "function", "function": {"name": "get_weather"}}, calls_first),
        (strict, "required", calls_first | {str(i): -100 for i in whitespace_ids()}),
    ]
    for tools, choice, bias in cases:
        response = chat(
            twin,
            LARGE3,
            messages=weather,
            tools=tools,
            tool_choice=choice,
            parallel_tool_calls=False,
            temperature=0,
            max_tokens=60,
            logit_bias=bias,
        )
        assert response.status_code == 200, response.text
        message = response.json()["choices"][0]["message"]
        calls = message["tool_calls"]
        assert calls and calls[0]["function"]["name"].strip() == "get_weather", message
    assert json.loads(calls[0]["function"]["arguments"])["city"] in {"Paris", "Lyon"}
    for choice in ("auto", "none"):
        assert (
            chat(
                twin, LARGE3, messages=weather, tools=TOOLS, tool_choice=choice, max_tokens=8
            ).status_code
            == 200
        )
    refused(chat(twin, LARGE3, messages=weather, tool_choice="auto"), "tool_choice_needs_tools")


def test_images_become_image_tokens_in_the_prompt(twin):
    """mistral_common's image encoder: each 64 x 64 image is [IMG] x 2, [IMG_BREAK], [IMG] x 2,
    [IMG_END], ten of them included."""
    text = prompt_text(twin, messages=QUESTION)
    ten = image_question(BOARDWALK_JPG)
    ten[0]["content"] = [ten[0]["content"][0]] + [
        {"type": "image_url", "image_url": {"url": SQUARE_PNG}}
    ] * 10
    prompt = prompt_text(twin, messages=ten)
    assert prompt.count("[IMG][IMG][IMG_BREAK][IMG][IMG][IMG_END]") == 10
    assert "[IMG]" not in text


def test_tool_results_take_the_assistants_turn(twin):
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    prompt = prompt_text(
        twin,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "21C and sunny"},
        ],
    )
    # Tekken v13's layout: the tools before the last user turn, the call as name and [ARGS].
    assert "[AVAILABLE_TOOLS]" in prompt and "get_weather" in prompt
    assert '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}</s>' in prompt
    assert prompt.endswith("[TOOL_RESULTS]21C and sunny[/TOOL_RESULTS]")
