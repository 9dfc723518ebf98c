from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import pytest
from PIL import Image

from tests.e2e.server import Server, start_server

TINY_MODEL = "nimctl/tiny-vlm"


@pytest.fixture(scope="session")
def tiny_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One tiny-profile server for the whole session: an engine takes 15-30 s to start."""
    log = tmp_path_factory.mktemp("tiny") / "nimctl.log"
    server = start_server("tiny", log)
    yield server
    code = server.stop()
    assert code == 0, f"SIGTERM should stop nimctl cleanly, got {code}:\n{server.log_tail()}"


def image_data_url(fmt: str = "PNG", size: tuple[int, int] = (48, 32), color: str = "red") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    mime = {"PNG": "png", "JPEG": "jpeg", "GIF": "gif"}[fmt]
    return f"data:image/{mime};base64,{base64.b64encode(buffer.getvalue()).decode()}"


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
