"""Mistral Small 4's page and rules on its CPU twin, on the real serving path.

The twin is Mistral Small 4's architecture in Mistral's native format (vLLM's
PixtralForConditionalGeneration over MistralLarge3ForCausalLM) with the seed's engine arguments:
mistral_common renders every prompt from the Tekken v15 tokenizer, and vLLM's mistral reasoning
and tool parsers read its control tokens. Its weights are random, so what the model is asked to
do is checked in what reaches it (prompt token ids and counts), and its output only in structure.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from nimctl.modelgen.mistral import SMALL4 as SMALL4_TWIN
from nimctl.modelgen.tekken import control_token_id
from tests.support.media import image_data_url
from tests.support.seed_checks import (  # noqa: F401  (collected here, run against this twin)
    chat,
    check_stream,
    refused,
    test_seed_example_with_curl,
    test_seed_example_with_openai_sdk,
    test_seed_langchain_example,
    test_seed_models_and_health,
)
from tests.support.seeds import BOARDWALK_JPG, SMALL4, TOOLS, image_question
from tests.support.server import E2E_CACHE

# Real-architecture twins run in `make test-twins` (see the Makefile), not `make test`.
pytestmark = pytest.mark.real_twin
PROFILE = "mistral-small-4-119b-2603-tiny"
QUESTION = [{"role": "user", "content": "If a train leaves at 3pm at 60mph, when...?"}]
HI = [{"role": "user", "content": "hi"}]
WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
# mistral_common's tool grammar (`body: think? fcalls`, calls preceded by optional free text)
# never forces a call: a random model writes text until max_tokens. A strong bias on
# [TOOL_CALLS] makes it open a call at once; the grammar then constrains what follows.
TOOL_CALLS_FIRST = {str(control_token_id("[TOOL_CALLS]")): 100}
SQUARE_PNG = image_data_url("PNG", (64, 64), "red")


def completion(server: Any, **body: Any) -> dict[str, Any]:
    response = chat(server, SMALL4, **body)
    assert response.status_code == 200, response.text
    return response.json()


def prompt_ids(server: Any, **body: Any) -> list[int]:
    return completion(server, max_tokens=1, return_token_ids=True, **body)["prompt_token_ids"]


def prompt_tokens(server: Any, **body: Any) -> int:
    return completion(server, max_tokens=1, **body)["usage"]["prompt_tokens"]


def whitespace_ids() -> list[int]:
    """The twin's tokens that are only whitespace (the server built its tekken.json)."""
    from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    path = SMALL4_TWIN.model_dir(E2E_CACHE) / "tekken.json"
    tekken = MistralTokenizer.from_file(str(path)).instruct_tokenizer.tokenizer
    pieces = range(tekken.num_special_tokens, tekken.n_words)
    return [i for i in pieces if not tekken.id_to_byte_piece(i, SpecialTokenPolicy.KEEP).strip()]


def with_images(*urls: str) -> list[dict[str, Any]]:
    parts = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return [{"role": "user", "content": [{"type": "text", "text": "hi"}, *parts]}]


def test_served_on_the_real_architecture(twin):
    log = twin.log_path.read_text(errors="replace")
    assert "Resolved architecture: PixtralForConditionalGeneration" in log


def test_mistral_common_renders_reasoning_effort(twin):
    """The real model's tokenizer writes the setting into the prompt as model settings; "none"
    is the default (nimctl sends it explicitly), "high" differs from it."""
    high = prompt_ids(twin, messages=QUESTION, reasoning_effort="high")
    none = prompt_ids(twin, messages=QUESTION, reasoning_effort="none")
    default = prompt_ids(twin, messages=QUESTION)
    assert default == none != high
    settings = control_token_id("[MODEL_SETTINGS]")
    assert high[1] == none[1] == settings  # right after <s>
    assert prompt_tokens(twin, messages=QUESTION, reasoning_effort="high") == len(high)


def test_reasoning_comes_back_in_the_reasoning_field(twin):
    """The random model reasons only if it writes [THINK]; a bias on that token makes it, and
    vLLM's mistral reasoning parser must move what follows into `reasoning`."""
    bias = {str(control_token_id("[THINK]")): 100}
    out = completion(
        twin,
        messages=QUESTION,
        reasoning_effort="high",
        max_tokens=24,
        temperature=0,
        logit_bias=bias,
    )
    message = out["choices"][0]["message"]
    assert message["reasoning"], message
    response = chat(
        twin,
        SMALL4,
        messages=QUESTION,
        reasoning_effort="high",
        max_tokens=16,
        temperature=0,
        logit_bias=bias,
        stream=True,
    )
    assert response.status_code == 200, response.text
    chunks = check_stream(response.text, SMALL4)
    assert any(c["choices"][0]["delta"].get("reasoning") for c in chunks if c["choices"])


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
    """mistral_common would silently merge two user turns; NIM's page says 400."""
    refused(chat(twin, SMALL4, messages=[*HI, *HI]), "strict_alternation")
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


def test_continue_final_message(twin):
    ids = prompt_ids(
        twin,
        messages=[*HI, {"role": "assistant", "content": "One, two,"}],
        add_generation_prompt=False,
        continue_final_message=True,
    )
    assert ids[-1] != control_token_id("</s>")  # the assistant's message stays open


def test_images_become_image_tokens_in_the_prompt(twin):
    """mistral_common's image encoder: a 64 x 64 image is [IMG] x 2, [IMG_BREAK], [IMG] x 2,
    [IMG_END]; a larger one is scaled down to 64 px on its long side (300 x 120 -> 64 x 32:
    [IMG] x 2, [IMG_END])."""
    text = prompt_tokens(twin, messages=HI)
    one = prompt_ids(twin, messages=with_images(SQUARE_PNG))
    assert len(one) == text + 6
    image = [control_token_id(t) for t in ("[IMG]", "[IMG_BREAK]", "[IMG_END]")]
    assert [t for t in one if t in image] == [image[0]] * 2 + [image[1]] + [image[0]] * 2 + [
        image[2]
    ]
    assert prompt_tokens(twin, messages=with_images(SQUARE_PNG, SQUARE_PNG)) == text + 12
    wide = image_data_url("PNG", (300, 120), "blue")
    assert prompt_tokens(twin, messages=with_images(wide)) == text + 3
    out = completion(twin, messages=with_images(SQUARE_PNG), max_tokens=4, temperature=0)
    assert out["usage"]["completion_tokens"] >= 1


def test_five_images_pass_six_do_not(twin):
    five = image_question(BOARDWALK_JPG)
    five[0]["content"] += [five[0]["content"][1]] * 4
    assert chat(twin, SMALL4, messages=five, max_tokens=2).status_code == 200
    six = image_question(BOARDWALK_JPG)
    six[0]["content"] += [six[0]["content"][1]] * 5
    error = refused(chat(twin, SMALL4, messages=six, max_tokens=2), "max_images_per_prompt")
    assert "NIM_MAX_IMAGES_PER_PROMPT=5" in error["message"]


def test_named_tool_choice_returns_that_function(twin):
    out = completion(
        twin,
        messages=WEATHER,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=48,
        logit_bias=TOOL_CALLS_FIRST,
    )
    calls = out["choices"][0]["message"]["tool_calls"]
    assert calls and calls[0]["function"]["name"].strip() == "get_weather", out


def test_named_tool_choice_streamed(twin):
    """The streamed name keeps the whitespace mistral_common's grammar allows before it."""
    response = chat(
        twin,
        SMALL4,
        messages=WEATHER,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=24,
        logit_bias=TOOL_CALLS_FIRST,
        stream=True,
    )
    assert response.status_code == 200, response.text
    chunks = check_stream(response.text, SMALL4)
    names = [
        call["function"]["name"]
        for c in chunks
        if c["choices"]
        for call in c["choices"][0]["delta"].get("tool_calls") or []
        if (call.get("function") or {}).get("name")
    ]
    assert "".join(names).strip() == "get_weather", names


def test_strict_tool_is_called_with_its_schema(twin):
    """With a strict tool mistral_common's grammar holds the name and the arguments' schema.

    Its JSON allows whitespace between tokens, and at temperature 0 the random model writes
    whitespace until max_tokens (`{"mode"` and blanks); banning whitespace tokens, as
    `disable_any_whitespace` does on the other twins' JSON decoding, lets the call finish.
    """
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
    out = completion(
        twin,
        messages=[{"role": "user", "content": "Go fast"}],
        tools=tools,
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=60,
        logit_bias=TOOL_CALLS_FIRST | {str(i): -100 for i in whitespace_ids()},
    )
    (call,) = out["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"].strip() == "set_mode"
    assert json.loads(call["function"]["arguments"])["mode"] in {"fast", "slow"}
    assert out["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_choice_needs_tools(twin):
    refused(chat(twin, SMALL4, messages=WEATHER, tool_choice="required"), "tool_choice_needs_tools")
