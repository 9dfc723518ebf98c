"""Which GPUs this process may use, found without importing torch or vLLM.

`nvidia-smi` answers in milliseconds where a CUDA import costs seconds, and it works the same
whether the installed engine is the GPU or the CPU build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping

from nimctl.profiles import Gpu


def detect_gpus(environ: Mapping[str, str] | None = None) -> list[Gpu]:
    environ = os.environ if environ is None else environ
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return visible_gpus(parse_nvidia_smi(out), environ.get("CUDA_VISIBLE_DEVICES"))


def parse_nvidia_smi(output: str) -> list[tuple[str, Gpu]]:
    gpus = []
    for line in output.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3:
            continue
        index, name, mib = parts
        try:
            gpus.append((index, Gpu(name=name, memory_gib=round(float(mib) / 1024, 1))))
        except ValueError:
            continue
    return gpus


def visible_gpus(gpus: list[tuple[str, Gpu]], cuda_visible: str | None) -> list[Gpu]:
    """Apply CUDA_VISIBLE_DEVICES (indices; UUID forms are not resolved and keep all)."""
    if cuda_visible is None:
        return [gpu for _, gpu in gpus]
    wanted = [v.strip() for v in cuda_visible.split(",") if v.strip()]
    if wanted and wanted[0].startswith("-"):
        return []  # "-1" hides every GPU
    if not all(v.isdigit() for v in wanted):
        return [gpu for _, gpu in gpus]
    by_index = dict(gpus)
    return [by_index[v] for v in wanted if v in by_index]
