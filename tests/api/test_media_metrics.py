"""The media histograms on /v1/metrics, observed from a chat request's media intake."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

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
