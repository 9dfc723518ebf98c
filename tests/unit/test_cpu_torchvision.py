"""The CPU-twin torchvision workaround: importable only when activated, in this process and in
the processes it starts (vLLM spawns its engine core and workers)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nimctl.engine import cpu_torchvision
from nimctl.engine.cpu_torchvision import CpuTorchvisionError, activate, side_dir


def run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )


def test_without_the_side_copy_activation_says_what_to_run(tmp_path):
    environ: dict[str, str] = {}
    with pytest.raises(CpuTorchvisionError, match="make install"):
        activate(environ, prefix=str(tmp_path))
    assert environ == {}


def test_torchvision_is_off_the_path_unless_activated():
    """The install keeps torchvision out of the venv: `import vllm` must not meet it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = run("import torchvision", env)
    assert "No module named 'torchvision'" in result.stderr


def test_a_process_started_after_activation_imports_torchvision_transforms():
    if not (side_dir() / "torchvision").is_dir():
        pytest.fail(f"{side_dir()} is missing: `make install` puts torchvision's wheel there")
    env = dict(os.environ)
    activate(env)
    assert env["PYTHONPATH"].split(os.pathsep)[:2] == [
        str(cpu_torchvision.HOOK_DIR),
        str(side_dir()),
    ]
    result = run(
        "import torchvision.transforms.v2 as T; from PIL import Image; "
        "print(T.Resize((8, 8))(Image.new('RGB', (30, 20))).size)",
        env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "(8, 8)"


def test_activated_in_process_vllm_loads_the_twin_architectures():
    """What the HTTP process does: activate, then import vLLM's modules that need torchvision."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = (
        "import os; from nimctl.engine.cpu_torchvision import activate; activate(os.environ)\n"
        "import vllm.model_executor.models.qwen3_5, vllm.model_executor.models.pixtral\n"
        "import vllm.model_executor.models.nemotron_vl\n"
        "from transformers import Qwen3VLVideoProcessor\n"
        "Qwen3VLVideoProcessor()\n"
        "print('loaded')"
    )
    result = run(code, env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("loaded")
