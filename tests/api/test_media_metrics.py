"""The media histograms on /v1/metrics, observed from a chat request's media intake."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.support.fake_engine import FAKE_MEDIA_TOKENS
from tests.support.media import image_data_url


async def test_a_chat_with_images_is_counted_in_the_media_histograms(harness):
    await harness.make_ready()
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": image_data_url("PNG", (40, 30))}},
                ],
            }
        ]
    }
    assert (await harness.client.post("/v1/chat/completions", json=body)).status_code == 200
    plain = {"messages": [{"role": "user", "content": "hi"}]}
    assert (await harness.client.post("/v1/chat/completions", json=plain)).status_code == 200
    text = (await harness.client.get("/v1/metrics")).text
    samples = {
        (s.name, tuple(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    # One request had media; the plain one observes nothing.
    assert samples[("nimctl_media_request_image_pixels_count", ())] == 1
    assert samples[("nimctl_media_request_image_pixels_sum", ())] == 1200
    assert samples[("nimctl_media_decode_seconds_count", (("kind", "image"),))] == 1
    assert samples[("nimctl_media_request_bytes_count", (("kind", "image"),))] == 1
    assert samples[("nimctl_media_fetch_seconds_count", (("kind", "image"),))] == 0  # data: URL
    # What the engine reported the image became in prompt tokens, once.
    assert samples[("nimctl_media_request_tokens_count", (("kind", "image"),))] == 1
    assert (
        samples[("nimctl_media_request_tokens_sum", (("kind", "image"),))]
        == FAKE_MEDIA_TOKENS["image"]
    )
    assert samples[("nimctl_media_request_tokens_count", (("kind", "video"),))] == 0


async def test_media_tokens_are_one_observation_per_request_summed_over_its_items(harness):
    await harness.make_ready()
    picture = {"type": "image_url", "image_url": {"url": image_data_url("PNG", (8, 8))}}
    body = {"messages": [{"role": "user", "content": [picture, picture, picture]}]}
    streamed = {**body, "stream": True}
    for request in (body, streamed):
        response = await harness.client.post("/v1/chat/completions", json=request)
        assert response.status_code == 200, response.text
    refused = {**body, "tool_choice": "auto"}  # a guard refuses it: no engine, no tokens
    assert (await harness.client.post("/v1/chat/completions", json=refused)).status_code == 400
    samples = await _samples(harness)
    image = (("kind", "image"),)
    assert samples[("nimctl_media_request_tokens_count", image)] == 2
    assert samples[("nimctl_media_request_tokens_sum", image)] == 2 * 3 * FAKE_MEDIA_TOKENS["image"]
    assert samples[("nimctl_media_request_tokens_bucket", (*image, ("le", "16.0")))] == 0
    assert samples[("nimctl_media_request_tokens_bucket", (*image, ("le", "32.0")))] == 2


async def _samples(harness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = (await harness.client.get("/v1/metrics")).text
    return {
        (s.name, tuple(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
