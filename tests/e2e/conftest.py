from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server import Server, start_server
from tests.support.media import image_bytes, image_data_url

TINY_MODEL = "nimctl/tiny-vlm"


# Media settings of the shared tiny server: the test image server is reached by the name
# "localhost" (admitted), while 127.0.0.1 itself and other names resolving to it are not; small
# caps and timeouts keep the refusal cases fast.
TINY_MEDIA_ENV = {
    "NIM_MEDIA_ALLOWLIST": "localhost",
    "NIM_MEDIA_CONNECT_TIMEOUT": "1",
    "NIM_MEDIA_READ_TIMEOUT": "1",
    "NIM_MEDIA_FETCH_TIMEOUT": "3",
    "NIM_MEDIA_MAX_IMAGE_BYTES": str(2 * 2**20),
}


@pytest.fixture(scope="session")
def media_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory the tiny server may read file:// media from."""
    root = tmp_path_factory.mktemp("media-root")
    (root / "ok.png").write_bytes(image_bytes("PNG"))
    return root


@pytest.fixture(scope="session")
def tiny_server(tmp_path_factory: pytest.TempPathFactory, media_root: Path) -> Iterator[Server]:
    """One tiny-profile server for the whole session: an engine takes 15-30 s to start."""
    log = tmp_path_factory.mktemp("tiny") / "nimctl.log"
    server = start_server(
        "tiny", log, env={**TINY_MEDIA_ENV, "NIM_MEDIA_LOCAL_PATH": str(media_root)}
    )
    yield server
    code = server.stop()
    assert code == 0, f"SIGTERM should stop nimctl cleanly, got {code}:\n{server.log_tail()}"


@pytest.fixture(scope="module")
def twin(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server for the CPU twin named by the test module's PROFILE (with its ENV, if any), for
    that module only."""
    profile = request.module.PROFILE
    log = tmp_path_factory.mktemp(profile) / "nimctl.log"
    server = start_server(profile, log, getattr(request.module, "ENV", None))
    yield server
    code = server.stop()
    assert code == 0, f"SIGTERM should stop nimctl cleanly, got {code}:\n{server.log_tail()}"


@pytest.fixture(scope="session")
def png_url() -> str:
    return image_data_url("PNG")


def sse_events(text: str) -> list[str]:
    return [e.removeprefix("data: ") for e in text.split("\n\n") if e.strip()]


def assert_error_shape(body: dict, code: int) -> dict:
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["code"] == code
    return body["error"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Seed-example tests imported into a twin's module run that page's examples."""
    if "example" in metafunc.fixturenames:
        from tests.e2e.seeds import EXAMPLES

        examples = EXAMPLES[metafunc.module.PROFILE]
        metafunc.parametrize("example", examples, ids=[name for name, _ in examples])
