"""Media intake: bytes resolved, checked and handed to vLLM decoded; 400s name the part."""

from __future__ import annotations

import base64
import hashlib
import io
from typing import Any

import pytest
from blake3 import blake3
from PIL import Image

from nimctl.guards import GuardError
from nimctl.media.fetch import FetchError
from nimctl.media.formats import VideoInfo
from nimctl.media.images import ImageProblem, load_image
from nimctl.media.intake import MediaError, MediaIntake, MediaLimits
from nimctl.media.video import VideoProblem, inspect_video
from nimctl.profiles import ProfileStore, apply_settings, builtin_profiles_dir
from nimctl.settings import NimSettings
from tests.support.media import (
    image_bytes,
    image_data_url,
    png_claiming,
    video_bytes,
    video_data_url,
)

LIMITS = MediaLimits(
    max_image_bytes=2_000_000, max_image_pixels=1_000_000, max_video_bytes=5_000_000
)


class StubFetcher:
    """URL -> bytes or FetchError; records what was asked."""

    def __init__(self, answers: dict[str, bytes | FetchError]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, int]] = []

    async def fetch(self, url: str, max_bytes: int) -> bytes:
        self.asked.append((url, max_bytes))
        answer = self.answers[url]
        if isinstance(answer, FetchError):
            raise answer
        return answer

    async def aclose(self) -> None:
        pass


@pytest.fixture(scope="module")
def store() -> ProfileStore:
    return ProfileStore.load([builtin_profiles_dir()])


def request(*parts: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, *parts]}],
        **fields,
    }


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def video(url: str) -> dict[str, Any]:
    return {"type": "video_url", "video_url": {"url": url}}


async def resolve(store, payload, answers=None, profile="tiny", hash_name="blake3", **settings):
    fetcher = StubFetcher(answers or {})
    intake = MediaIntake(fetcher, LIMITS)  # type: ignore[arg-type]
    prof = apply_settings(store.get(profile), NimSettings(**settings))
    await intake.resolve(payload, prof, hash_name)
    return fetcher


async def refused(store, payload, reason, answers=None, profile="tiny", **settings):
    with pytest.raises(MediaError) as info:
        await resolve(store, payload, answers, profile, **settings)
    assert info.value.reason == reason, info.value.message
    assert info.value.status == 400
    assert f"(reason: {reason})" in info.value.message
    return info.value


# --- images ---------------------------------------------------------------------------


async def test_base64_image_becomes_a_decoded_image_part(store):
    payload = request({**image(image_data_url("PNG", (40, 30))), "uuid": "img-1"})
    await resolve(store, payload)
    part = payload["messages"][0]["content"][1]
    assert part["type"] == "image_pil" and part["uuid"] == "img-1"
    assert isinstance(part["image_pil"], Image.Image) and part["image_pil"].size == (40, 30)


async def test_an_image_without_uuid_gets_the_hash_of_its_encoded_bytes(store):
    """vLLM then keys its caches by this instead of hashing the decoded pixels."""
    same = image_data_url("PNG", (40, 30))
    payload = request(image(same), image(same), image(image_data_url("PNG", (41, 30))))
    await resolve(store, payload)
    uuids = [part["uuid"] for part in payload["messages"][0]["content"][1:]]
    encoded = base64.b64decode(same.split(",", 1)[1])
    assert uuids[0] == uuids[1] == f"blake3:{blake3(encoded).hexdigest()}"
    assert uuids[2] != uuids[0]


@pytest.mark.parametrize("hash_name", ["sha256", "sha512"])
async def test_the_image_hash_is_the_engines_own_algorithm(store, hash_name):
    """An engine configured for FIPS (`mm_hasher_algorithm: sha256`) gets no blake3 key."""
    data_url = image_data_url("PNG", (40, 30))
    payload = request(image(data_url))
    await resolve(store, payload, hash_name=hash_name)
    digest = hashlib.new(hash_name, base64.b64decode(data_url.split(",", 1)[1])).hexdigest()
    assert payload["messages"][0]["content"][1]["uuid"] == f"{hash_name}:{digest}"


async def test_url_image_is_fetched_once_with_the_image_cap(store):
    payload = request(image("https://img.example/a.jpg"))
    fetcher = await resolve(store, payload, {"https://img.example/a.jpg": image_bytes("JPEG")})
    assert fetcher.asked == [("https://img.example/a.jpg", LIMITS.max_image_bytes)]
    assert payload["messages"][0]["content"][1]["type"] == "image_pil"


async def test_a_mistral_tokenizer_gets_the_checked_bytes_as_a_data_url(store):
    """vLLM hands a Mistral tokenizer the request's own parts, and mistral_common knows no
    image_pil part: it gets a data: URL of the bytes checked here, never a URL to fetch."""
    from mistral_common.protocol.instruct.messages import UserMessage

    jpeg = image_bytes("JPEG", (40, 30))
    payload = request(image("https://img.example/a.jpg"))
    await resolve(
        store, payload, {"https://img.example/a.jpg": jpeg}, "mistral-small-4-119b-2603-tiny"
    )
    part = payload["messages"][0]["content"][1]
    assert part["type"] == "image_url"
    assert part["uuid"] == f"blake3:{blake3(jpeg).hexdigest()}"
    head, data = part["image_url"]["url"].split(",", 1)
    assert head == "data:image/jpeg;base64" and base64.b64decode(data) == jpeg
    message = UserMessage.from_openai(payload["messages"][0])
    assert type(message.content[1]).__name__ == "ImageURLChunk"


async def test_whitespace_in_base64_is_tolerated(store):
    url = image_data_url("PNG")
    head, data = url.split(",", 1)
    wrapped = head + "," + "\n".join(data[i : i + 76] for i in range(0, len(data), 76))
    await resolve(store, request(image(wrapped)))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("data:image/png;base64,@@@@", "base64"),
        ("data:image/png;base64,iVBORw0KGgo=x", "base64"),
        ("data:image/png,rawbytes", "data_url"),
        ("data:text/plain;base64," + base64.b64encode(image_bytes()).decode(), "mime_type"),
        (
            "data:image/jpeg;base64," + base64.b64encode(image_bytes("PNG")).decode(),
            "mime_mismatch",
        ),
        (
            "data:image/png;base64," + base64.b64encode(b"not an image at all").decode(),
            "not_an_image",
        ),
        ("data:image/png;base64," + base64.b64encode(image_bytes()[:60]).decode(), "corrupt"),
    ],
)
async def test_bad_base64_images(store, url, reason):
    error = await refused(store, request(image(url)), reason)
    assert error.param == "messages[0].content[1]"


async def test_oversized_base64_is_refused_before_decoding(store):
    huge = "data:image/png;base64," + "A" * 3_000_000  # 2.25 MB decoded > 2 MB
    error = await refused(store, request(image(huge)), "too_large")
    assert "2,000,000 bytes" in error.message


async def test_pixel_bomb_is_refused_from_the_header(store):
    # A 2000 x 2000 PNG (4 MP) compresses to a few kB; the cap is 1 MP.
    url = image_data_url("PNG", (2000, 2000), "black")
    error = await refused(store, request(image(url)), "too_many_pixels")
    assert "2000 x 2000" in error.message


@pytest.mark.parametrize("max_pixels", [1_000_000, 10**12])
def test_decompression_bomb_header_is_refused_before_decoding(max_pixels):
    """Refused from the header, whether nimctl's cap or Pillow's own bomb check trips first."""
    with pytest.raises(ImageProblem) as info:
        load_image(png_claiming(100_000, 100_000), formats=("png",), max_pixels=max_pixels)
    assert info.value.reason == "too_many_pixels"


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (16, 16), color) for color in ("red", "blue", "green")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    loaded = load_image(buffer.getvalue(), formats=("gif",), max_pixels=10_000)
    assert loaded.tell() == 0
    assert loaded.convert("RGB").getpixel((0, 0)) == (255, 0, 0)


async def test_format_whitelist_is_the_profiles(store):
    gif = image(image_data_url("GIF"))
    nemotron = "llama-3.1-nemotron-nano-vl-8b-v1"
    with pytest.raises(GuardError) as info:
        await resolve(store, request(gif), profile=nemotron)
    assert info.value.rule == "image_formats" and "GIF" in info.value.message
    await resolve(store, request(image(image_data_url("GIF"))))  # tiny takes GIF
    fetched = {"https://x.example/y.png": image_bytes("GIF")}  # name lies, bytes decide
    with pytest.raises(GuardError):
        await resolve(store, request(image("https://x.example/y.png")), fetched, profile=nemotron)
    webp = image(image_data_url("WEBP"))
    with pytest.raises(GuardError):
        await resolve(store, request(webp))


async def test_fetch_failures_name_the_part_and_reason(store):
    url = "http://169.254.169.254/latest/meta-data"
    answers = {url: FetchError("blocked_address", "the media URL is not public; use another")}
    payload = request(image(image_data_url()), image(url))
    error = await refused(store, payload, "blocked_address", answers)
    assert error.param == "messages[0].content[2]"
    assert error.message.startswith(
        "messages[0].content[2]: The media URL is not public; use another. (reason:"
    )


async def test_first_failing_part_is_reported(store):
    answers = {
        "https://a.example/1.png": FetchError("http_status", "HTTP 404."),
        "https://a.example/2.png": FetchError("timeout", "Too slow."),
    }
    payload = request(image("https://a.example/1.png"), image("https://a.example/2.png"))
    error = await refused(store, payload, "http_status", answers)
    assert error.param == "messages[0].content[1]"


async def test_part_without_url(store):
    await refused(store, request({"type": "image_url", "image_url": {}}), "url")


# --- videos ---------------------------------------------------------------------------


QWEN = "qwen3.5-397b-a17b"


def test_video_inspection():
    assert inspect_video(video_bytes(frames=25, fps=10.0)) == VideoInfo(frames=25, fps=10.0)
    with pytest.raises(VideoProblem) as info:
        inspect_video(b"\x00" * 64)
    assert info.value.reason == "not_a_video"
    with pytest.raises(VideoProblem) as info:
        inspect_video(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    assert info.value.reason == "corrupt"


async def test_video_data_url_is_kept_and_checked(store):
    url = video_data_url(frames=25, fps=10.0)
    payload = request(video(url), media_io_kwargs={"video": {"num_frames": 25, "fps": 10}})
    await resolve(store, payload, profile=QWEN, max_videos_per_prompt=1)
    assert payload["messages"][0]["content"][1]["video_url"]["url"] == url


async def test_fetched_video_is_inlined(store):
    blob = video_bytes(frames=10, fps=5.0)
    payload = request(video("https://v.example/clip.mp4"))
    await resolve(
        store, payload, {"https://v.example/clip.mp4": blob}, profile=QWEN, max_videos_per_prompt=1
    )
    inlined = payload["messages"][0]["content"][1]["video_url"]["url"]
    assert inlined == "data:video/mp4;base64," + base64.b64encode(blob).decode()


@pytest.mark.parametrize(
    ("sampling", "accepted"),
    [
        ({"fps": 10.0}, True),
        ({"fps": 10.5}, False),
        ({"num_frames": 25}, True),
        ({"num_frames": 26}, False),
        ({"fps": 2.0, "num_frames": 16}, True),
    ],
)
async def test_sampling_cannot_exceed_the_video(store, sampling, accepted):
    payload = request(
        video(video_data_url(frames=25, fps=10.0)), media_io_kwargs={"video": sampling}
    )
    if accepted:
        await resolve(store, payload, profile=QWEN, max_videos_per_prompt=1)
        return
    with pytest.raises(GuardError) as info:
        await resolve(store, payload, profile=QWEN, max_videos_per_prompt=1)
    assert info.value.rule == "media_io_kwargs"


@pytest.mark.parametrize(
    ("sampling", "kept"),
    [
        # 25 frames at 10 fps: 2.5 s. fps 2 samples 5 frames.
        ({"fps": 2.0, "num_frames": 16}, {"fps": 2.0}),
        ({"fps": 2.0, "num_frames": 3}, {"num_frames": 3}),
        ({"fps": 2.0, "num_frames": 5}, {"num_frames": 5}),  # a tie: the exact count
    ],
)
async def test_with_fps_and_num_frames_the_fewer_frames_win(store, sampling, kept):
    """The Qwen3.5 page: "If you specify both, the model uses the option that results in the
    least number of frames"."""
    payload = request(
        video(video_data_url(frames=25, fps=10.0)), media_io_kwargs={"video": dict(sampling)}
    )
    await resolve(store, payload, profile=QWEN, max_videos_per_prompt=1)
    assert payload["media_io_kwargs"]["video"] == kept


async def test_bad_videos(store):
    await refused(
        store,
        request(video("data:video/mp4;base64,AAAA")),
        "not_a_video",
        profile=QWEN,
        max_videos_per_prompt=1,
    )
    await refused(
        store,
        request(video("data:image/png;base64,AAAA")),
        "mime_type",
        profile=QWEN,
        max_videos_per_prompt=1,
    )


async def test_requests_without_media_touch_nothing(store):
    payload = {"messages": [{"role": "user", "content": "hi"}]}
    fetcher = await resolve(store, payload)
    assert fetcher.asked == [] and payload == {"messages": [{"role": "user", "content": "hi"}]}


# --- the report (metrics and trace spans are made from it) ------------------------------


async def test_the_report_has_each_items_times_and_sizes(store):
    jpeg = image_bytes("JPEG", (40, 30))
    blob = video_bytes(frames=10, fps=5.0)
    payload = request(
        image("https://img.example/a.jpg"),
        image(image_data_url("PNG", (20, 10))),
        video("https://v.example/clip.mp4"),
    )
    intake = MediaIntake(
        StubFetcher({"https://img.example/a.jpg": jpeg, "https://v.example/clip.mp4": blob}),  # type: ignore[arg-type]
        LIMITS,
    )
    prof = apply_settings(store.get(QWEN), NimSettings(max_videos_per_prompt=1))
    report = await intake.resolve(payload, prof, "blake3")
    assert report is not None
    fetched, inline, clip = report.items
    assert (fetched.where, fetched.kind) == ("messages[0].content[1]", "image")
    assert fetched.fetched
    assert (fetched.bytes, fetched.pixels, fetched.frames) == (len(jpeg), 1200, 0)
    assert (inline.fetched, inline.pixels) == (False, 200)
    assert (clip.kind, clip.bytes, clip.frames, clip.pixels) == ("video", len(blob), 10, 0)
    for item in report.items:
        assert 0 < item.fetch_start_ns <= item.fetch_end_ns == item.decode_start_ns
        assert item.decode_start_ns < item.decode_end_ns


async def test_no_media_no_report(store):
    intake = MediaIntake(StubFetcher({}), LIMITS)  # type: ignore[arg-type]
    assert await intake.resolve(request(), store.get("tiny"), "blake3") is None
