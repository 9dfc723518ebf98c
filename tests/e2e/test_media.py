"""Media intake against the real server: URL images from a local image server (retries
included), and a corpus of bad inputs that must each end in a 4xx naming the part and the
reason, without the engine ever being called, and with the server still serving afterwards."""

from __future__ import annotations

import base64
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.errors import assert_error_shape
from tests.support.image_server import ImageServer
from tests.support.media import image_bytes, image_data_url, png_claiming
from tests.support.tiny import TINY_MODEL, ask, image

PNG = image_bytes("PNG")


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    with ImageServer() as server:
        server.route("/ok.png", PNG, content_type="image/png")
        server.route("/ok.jpg", image_bytes("JPEG"), content_type="image/jpeg")
        server.route("/flaky.png", PNG, content_type="image/png", statuses=[503, 200])
        server.route(
            "/limited.png",
            PNG,
            content_type="image/png",
            statuses=[(429, {"Retry-After": "0"}), 200],
        )
        server.route("/missing.png", statuses=[404])
        server.route("/page.html", b"<html>hello</html>", content_type="text/html")
        server.large("/huge.png", 3 * 2**20)
        server.large("/huge-chunked.png", 3 * 2**20, content_length=False)
        server.trickle("/slow.png", 10_000, bytes_per_second=50)
        server.redirect("/to-private", "http://10.0.0.1/x.png")
        server.redirect("/to-metadata", "http://169.254.169.254/latest/meta-data/")
        server.redirect("/to-ok", "/ok.png")
        for hop in range(5):
            server.redirect(f"/hop{hop}", f"/hop{hop + 1}")
        yield server


def local(images: ImageServer, path: str) -> str:
    """The image server by the admitted name "localhost"."""
    return f"http://localhost:{images.port}{path}"


def b64(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def engine_prompt_tokens(server) -> float:
    text = httpx.get(f"{server.base_url}/v1/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "vllm:prompt_tokens_total"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- URL images work ----------------------------------------------------------------------


def test_url_images_reach_the_model(tiny_server, images):
    base = ask(tiny_server).json()["usage"]["prompt_tokens"]
    one = ask(tiny_server, image(local(images, "/ok.png"))).json()["usage"]["prompt_tokens"]
    two = ask(tiny_server, image(local(images, "/ok.png")), image(local(images, "/ok.jpg")))
    assert two.status_code == 200, two.text
    assert (one - base, two.json()["usage"]["prompt_tokens"] - base) == (7, 14)


@pytest.mark.parametrize("path", ["/flaky.png", "/limited.png"])
def test_transient_failures_are_retried(tiny_server, images, path):
    before = images.count(path)
    response = ask(tiny_server, image(local(images, path)))
    assert response.status_code == 200, response.text
    assert images.count(path) - before == 2  # 503 / 429 once, then the image


def test_relative_redirect_is_followed(tiny_server, images):
    assert ask(tiny_server, image(local(images, "/to-ok"))).status_code == 200


def test_file_url_under_the_configured_root(tiny_server, media_root):
    assert ask(tiny_server, image((media_root / "ok.png").as_uri())).status_code == 200


def test_url_and_base64_give_the_same_prompt(tiny_server, images):
    by_url = ask(tiny_server, image(local(images, "/ok.png"))).json()["usage"]
    by_data = ask(tiny_server, image(b64(PNG))).json()["usage"]
    assert by_url["prompt_tokens"] == by_data["prompt_tokens"]


def media_tokens(server) -> tuple[float, float]:
    """`nimctl_media_request_tokens{kind="image"}`: (count, sum)."""
    text = httpx.get(f"{server.base_url}/v1/metrics").text
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("kind") == "image"
    }
    return (
        values.get("nimctl_media_request_tokens_count", 0.0),
        values.get("nimctl_media_request_tokens_sum", 0.0),
    )


def test_the_image_tokens_of_a_request_are_observed_once(tiny_server, images):
    """The histogram grows by the prompt tokens the image became, as the server's own tokenizer
    counts them (the chat with the image, minus the same chat without it); once, with `n=2`
    sampling one prompt twice."""
    question = {"type": "text", "text": "What is in this image?"}
    picture = image(local(images, "/ok.png"))

    def tokens(*content: dict[str, Any]) -> int:
        body = {"model": TINY_MODEL, "messages": [{"role": "user", "content": list(content)}]}
        response = httpx.post(f"{tiny_server.base_url}/tokenize", json=body, timeout=60)
        assert response.status_code == 200, response.text
        count: int = response.json()["count"]
        return count

    expected = tokens(question, picture) - tokens(question)
    assert expected > 0
    count, total = media_tokens(tiny_server)
    answer = ask(tiny_server, picture, n=2)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["choices"]) == 2
    plain = ask(tiny_server)  # no media: nothing observed
    assert plain.status_code == 200, plain.text
    assert media_tokens(tiny_server) == (count + 1, total + expected)


# --- the corpus of bad inputs ---------------------------------------------------------------


@dataclass(frozen=True)
class Env:
    images: ImageServer
    root: Path

    def local(self, path: str) -> str:
        return local(self.images, path)

    @property
    def port(self) -> int:
        return self.images.port


# (case, content part made from the environment, reason or rule the message must name)
CORPUS: list[tuple[str, Callable[[Env], dict[str, Any]], str]] = [
    ("truncated png", lambda e: image(b64(PNG[: len(PNG) // 2])), "corrupt"),
    (
        "truncated jpeg",
        lambda e: image(b64(image_bytes("JPEG", (64, 64))[:-20], "image/jpeg")),
        "corrupt",
    ),
    ("pixel bomb header", lambda e: image(b64(png_claiming(100_000, 100_000))), "too_many_pixels"),
    ("over the pixel cap", lambda e: image(b64(png_claiming(8000, 8000))), "too_many_pixels"),
    ("webp not accepted", lambda e: image(image_data_url("WEBP")), "image_formats"),
    ("bmp not accepted", lambda e: image(image_data_url("BMP")), "image_formats"),
    ("mime lie", lambda e: image(b64(PNG, "image/jpeg")), "mime_mismatch"),
    ("not an image type", lambda e: image(b64(PNG, "text/plain")), "mime_type"),
    ("not an image", lambda e: image(b64(b"%PDF-1.7 not a picture")), "not_an_image"),
    ("invalid base64", lambda e: image("data:image/png;base64,iVBOR***"), "base64"),
    ("bad base64 padding", lambda e: image("data:image/png;base64,iVBORw0KGgo"), "base64"),
    (
        "oversized base64",
        lambda e: image("data:image/png;base64," + "A" * (3 * 2**20)),
        "too_large",
    ),
    ("data url not base64", lambda e: image("data:image/png,%89PNG"), "data_url"),
    ("unreachable host", lambda e: image(f"http://localhost:{free_port()}/x.png"), "connect"),
    ("slow server", lambda e: image(e.local("/slow.png")), "timeout"),
    ("redirect to private", lambda e: image(e.local("/to-private")), "blocked_address"),
    ("redirect to metadata", lambda e: image(e.local("/to-metadata")), "blocked_address"),
    ("too many redirects", lambda e: image(e.local("/hop0")), "redirects"),
    (
        "name resolving to loopback",
        lambda e: image(f"http://{socket.gethostname()}:{e.port}/ok.png"),
        "blocked_address",
    ),
    ("ipv4 loopback", lambda e: image(f"http://127.0.0.1:{e.port}/ok.png"), "blocked_address"),
    ("ipv6 loopback", lambda e: image(f"http://[::1]:{e.port}/ok.png"), "blocked_address"),
    (
        "ipv4-mapped ipv6",
        lambda e: image(f"http://[::ffff:127.0.0.1]:{e.port}/ok.png"),
        "blocked_address",
    ),
    ("decimal ip", lambda e: image(f"http://2130706433:{e.port}/ok.png"), "blocked_address"),
    (
        "metadata address",
        lambda e: image("http://169.254.169.254/latest/meta-data/"),
        "blocked_address",
    ),
    (
        "ipv6 metadata",
        lambda e: image("http://[fd00:ec2::254]/latest/meta-data/"),
        "blocked_address",
    ),
    ("private network", lambda e: image("http://10.1.2.3/a.png"), "blocked_address"),
    ("unspecified address", lambda e: image(f"http://0.0.0.0:{e.port}/ok.png"), "blocked_address"),
    ("file outside the root", lambda e: image("file:///etc/passwd"), "local_path"),
    (
        "file escaping the root",
        lambda e: image(f"{e.root.as_uri()}/../../../etc/passwd"),
        "local_path",
    ),
    ("ftp scheme", lambda e: image("ftp://example.com/a.png"), "scheme"),
    ("gopher scheme", lambda e: image("gopher://example.com/a.png"), "scheme"),
    ("no scheme", lambda e: image("a.png"), "scheme"),
    ("credentials in url", lambda e: image(f"http://user:pw@localhost:{e.port}/ok.png"), "url"),
    ("upstream 404", lambda e: image(e.local("/missing.png")), "http_status"),
    ("html page", lambda e: image(e.local("/page.html")), "not_an_image"),
    ("too large by length", lambda e: image(e.local("/huge.png")), "too_large"),
    ("too large streamed", lambda e: image(e.local("/huge-chunked.png")), "too_large"),
    ("image part without url", lambda e: {"type": "image_url", "image_url": {}}, "url"),
    (
        "server-side part type",
        lambda e: {"type": "image_pil", "image_pil": "x"},
        "content_part_types",
    ),
    (
        "video on an image model",
        lambda e: {"type": "video_url", "video_url": {"url": b64(PNG)}},
        "video_input",
    ),
]


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 30


@pytest.mark.parametrize(("name", "make", "code"), CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_input_is_a_4xx_naming_part_and_reason(
    tiny_server, images, media_root, name, make, code
):
    part = make(Env(images, media_root))
    before = engine_prompt_tokens(tiny_server)
    response = ask(tiny_server, part)
    assert 400 <= response.status_code < 500, response.text
    error = assert_error_shape(response.json(), response.status_code)
    assert "messages[0].content[1]" in error["message"], error
    assert f": {code})" in error["message"], error
    assert engine_prompt_tokens(tiny_server) == before, "the request reached the engine"


def test_server_still_serves_after_the_corpus(tiny_server, images):
    assert httpx.get(f"{tiny_server.base_url}/v1/health/ready").status_code == 200
    assert ask(tiny_server, image(local(images, "/ok.png"))).status_code == 200
