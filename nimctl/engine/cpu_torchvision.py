"""torchvision for CPU twins only: the one place that works round PyPI's CUDA-only wheel.

vLLM's modules for Qwen3.5 (`qwen3_5` -> `qwen3_vl`, via transformers' Qwen2-VL image
processor), Pixtral (`pixtral`) and Nemotron VL (`nemotron_vl`, its processor's transforms) import
torchvision, and transformers' Qwen3-VL video processor requires it. The only torchvision wheels
the package registries offer here are CUDA builds: beside torch's CPU build their C++ ops do not
load, and the import then fails at `torch.library.register_fake("torchvision::nms")` ("operator
torchvision::nms does not exist"), which is why the install removes torchvision from the venv.

The Python part of torchvision (the transforms these models use) runs on CPU. So, for twins on
CPU, `make install` keeps a copy of the wheel in a side directory (`<venv>/cpu-twin-torchvision`,
not on the path by default), and `activate` puts it on the path of the HTTP process and of vLLM's
spawned engine processes, with an import hook that defines the two op schemas the import
registers fakes for (`nms`, `qnms`) just before torchvision is first imported. A GPU install has
the real torchvision and never calls this.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

from nimctl.errors import ConfigError

SIDE_DIR_NAME = "cpu-twin-torchvision"
# A directory whose sitecustomize.py calls install_import_hook in every Python process started
# with it on PYTHONPATH (vLLM's engine core and workers are spawned, not forked).
HOOK_DIR = Path(__file__).resolve().parent / "cpu_torchvision_site"
# The ops torchvision registers fake kernels for unconditionally at import (the others are
# registered only when its C++ library loaded).
OP_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)


class CpuTorchvisionError(ConfigError):
    """The side copy of torchvision is not there: `make install` was not run."""


def side_dir(prefix: str = sys.prefix) -> Path:
    return Path(prefix) / SIDE_DIR_NAME


class _DefineOpsFirst(importlib.abc.MetaPathFinder):
    """On the first `import torchvision`, define its op schemas, then let the import go on."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname == "torchvision":
            sys.meta_path.remove(self)
            define_op_schemas()
        return None


def define_op_schemas() -> None:
    import torch

    try:  # defined already (another hook, or a torchvision whose C++ ops loaded)
        torch._C._dispatch_find_schema_or_throw("torchvision::nms", "")
        return
    except RuntimeError:
        pass
    library = torch.library.Library("torchvision", "DEF")
    for schema in OP_SCHEMAS:
        library.define(schema)
    _DEFINITIONS.append(library)


# torch's op registry is process-wide; the Library object must live as long as the process, or
# its schemas are removed again.
_DEFINITIONS: list[object] = []


def install_import_hook() -> None:
    if "torchvision" in sys.modules or any(
        type(f).__name__ == _DefineOpsFirst.__name__ for f in sys.meta_path
    ):
        return
    sys.meta_path.insert(0, _DefineOpsFirst())


def activate(environ: MutableMapping[str, str], prefix: str = sys.prefix) -> Path:
    """Make the side torchvision importable here and in every process started from here.

    Call before transformers is imported: it decides once, at its own import, whether
    torchvision is available. Process-wide, so only the CLI calls it.
    """
    side = side_dir(prefix)
    if not (side / "torchvision" / "__init__.py").is_file():
        raise CpuTorchvisionError(
            f"this CPU twin needs torchvision's Python modules in {side}; run `make install` "
            "(it keeps a copy of the wheel there)"
        )
    entries = [str(HOOK_DIR), str(side)]
    current = environ.get("PYTHONPATH", "")
    environ["PYTHONPATH"] = os.pathsep.join(entries + ([current] if current else []))
    for entry in entries:
        if entry not in sys.path:
            sys.path.append(entry)
    install_import_hook()
    return side
