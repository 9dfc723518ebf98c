from __future__ import annotations

import pytest

from nimctl.admission import (
    CHARS_PER_TOKEN,
    TOKENS_PER_MESSAGE,
    Admission,
    Limits,
    choices,
    estimate_tokens,
)
from nimctl.errors import BadRequestError, TooManyRequestsError
from nimctl.guards.base import classify

BOUNDS = {"image": 700, "video": 5000}


def _estimate(payload):
    return estimate_tokens(payload, classify(payload), BOUNDS)


def test_text_counts_by_characters_plus_the_template_around_each_message():
    payload = {
        "messages": [{"role": "system", "content": "x" * 40}, {"role": "user", "content": "y" * 41}]
    }
    assert _estimate(payload) == 10 + 11 + 2 * TOKENS_PER_MESSAGE
    assert CHARS_PER_TOKEN == 4


def test_each_image_and_video_counts_the_model_bound_without_being_fetched():
    parts = [
        {"type": "text", "text": "abcd"},
        {"type": "image_url", "image_url": {"url": "http://unreachable.invalid/a.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "video_url", "video_url": {"url": "http://unreachable.invalid/a.mp4"}},
    ]
    payload = {"messages": [{"role": "user", "content": parts}]}
    assert _estimate(payload) == 1 + TOKENS_PER_MESSAGE + 2 * 700 + 5000


def test_tools_count_as_text_and_junk_counts_nothing():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert _estimate({"messages": [], "tools": tools}) > 0
    assert _estimate({"messages": "not a list", "tools": "nor this"}) == 0


@pytest.mark.parametrize(("n", "seqs"), [(None, 1), (3, 3), (0, 1), (True, 1), ("2", 1)])
def test_choices_counts_n_only_when_it_is_a_positive_integer(n, seqs):
    assert choices({} if n is None else {"n": n}) == seqs


def test_the_request_limit_counts_sequences_and_releases_once():
    admission = Admission(Limits(requests=3))
    first = admission.admit(2, 0)
    with pytest.raises(TooManyRequestsError) as refused:
        admission.admit(2, 0)
    assert refused.value.status == 429 and refused.value.headers() == {"retry-after": "1"}
    assert refused.value.reason == "max_queued_requests"
    first.release()
    first.release()  # idempotent: every exit path may call it
    assert admission.admitted == 0
    with pytest.raises(BadRequestError):
        admission.admit(4, 0)  # never fits: 400, not a retry


def test_the_token_limit_refuses_at_or_above_it_as_vllm_does():
    admission = Admission(Limits(tokens=100))
    big = admission.admit(1, 250)  # an idle replica takes a request larger than the limit
    with pytest.raises(TooManyRequestsError) as refused:
        admission.admit(1, 1)
    assert refused.value.reason == "max_queued_tokens"
    big.prefilled()
    assert admission.queued_tokens == 0 and admission.admitted == 1
    admission.admit(1, 1)
