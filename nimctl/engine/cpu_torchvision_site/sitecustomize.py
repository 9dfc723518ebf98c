"""Run at the start of processes that nimctl starts for a CPU twin (see cpu_torchvision.py).

The hook is loaded from the file beside this directory, not by package name, so that it is the
one of the nimctl that set PYTHONPATH, whatever else is installed.
"""

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "_nimctl_cpu_torchvision", Path(__file__).resolve().parents[1] / "cpu_torchvision.py"
)
if _spec is not None and _spec.loader is not None:
    _hook = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = _hook
    _spec.loader.exec_module(_hook)
    _hook.install_import_hook()
