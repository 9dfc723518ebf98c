"""The token routes' pure parts: which tokenize form a body is, and how a tokenize body's
reasoning_effort reaches the chat template as chat's does."""

from __future__ import annotations

import pytest

from nimctl.api.tokens import tokenize_form
from nimctl.engine.vllm import fold_reasoning_effort
from nimctl.errors import BadRequestError

HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("payload", "form"),
    [
        ({"prompt": "hi"}, "prompt"),
        ({"prompt": None}, "prompt"),  # its type is the validation's to refuse
        ({"messages": HI, "model": "m"}, "messages"),
    ],
)
def test_tokenize_form(payload, form):
    assert tokenize_form(payload) == form


@pytest.mark.parametrize(
    ("payload", "param"),
    [({}, "prompt"), ({"model": "m"}, "prompt"), ({"prompt": "a", "messages": HI}, "messages")],
)
def test_tokenize_form_refuses_both_and_neither(payload, param):
    with pytest.raises(BadRequestError) as refused:
        tokenize_form(payload)
    assert refused.value.param == param


def test_fold_reasoning_effort_leaves_a_body_without_it_alone():
    payload = {"messages": HI}
    assert fold_reasoning_effort(payload) is payload


@pytest.mark.parametrize(
    ("kwargs", "effort", "folded"),
    [
        (None, "none", {"enable_thinking": False, "reasoning_effort": "none"}),
        (None, "high", {"enable_thinking": True, "reasoning_effort": "high"}),
        (
            {"enable_thinking": True, "x": 1},
            "none",
            {"enable_thinking": True, "x": 1, "reasoning_effort": "none"},
        ),
    ],
)
def test_fold_reasoning_effort_as_chat_passes_it(kwargs, effort, folded):
    payload = {"messages": HI, "reasoning_effort": effort}
    if kwargs is not None:
        payload["chat_template_kwargs"] = kwargs
    result = fold_reasoning_effort(payload)
    assert result == {"messages": HI, "chat_template_kwargs": folded}
    assert payload["reasoning_effort"] == effort  # the caller's body is not changed
    assert kwargs is None or "reasoning_effort" not in kwargs


def test_fold_reasoning_effort_leaves_bad_values_to_validation():
    assert fold_reasoning_effort({"reasoning_effort": None}) == {}
    bad_kwargs = {"reasoning_effort": "none", "chat_template_kwargs": [1]}
    assert fold_reasoning_effort(bad_kwargs) == {"chat_template_kwargs": [1]}
    with pytest.raises(BadRequestError) as refused:
        fold_reasoning_effort({"reasoning_effort": 3})
    assert refused.value.param == "reasoning_effort"
