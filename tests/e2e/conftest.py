from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.media import image_bytes, image_data_url
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.server import Server, start_server
from tests.support.sharing import Sharing, start_sharing_server
from tests.support.tiny import TINY_MEDIA_ENV


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


@pytest.fixture(scope="session")
def sharing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sharing]:
    """One tiny-profile server with LoRA adapters, queue limits and tracing, for the modules on
    sharing a replica and on traces (tests/support/sharing.py)."""
    adapters = tmp_path_factory.mktemp("peft-source")
    log = tmp_path_factory.mktemp("sharing") / "nimctl.log"
    with OtlpReceiver() as receiver:
        server = start_sharing_server(adapters, log, receiver)
        yield Sharing(server, adapters, receiver)
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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Seed-example tests imported into a twin's module run that page's examples."""
    if "example" in metafunc.fixturenames:
        from tests.support.seeds import EXAMPLES

        examples = EXAMPLES[metafunc.module.PROFILE]
        metafunc.parametrize("example", examples, ids=[name for name, _ in examples])
