from __future__ import annotations

from nimctl.hardware import parse_nvidia_smi, visible_gpus
from nimctl.profiles import Gpu

SMI = "0, NVIDIA H100 80GB HBM3, 81559\n1, NVIDIA H100 80GB HBM3, 81559\nbad line\n"


def test_parse_nvidia_smi():
    gpus = parse_nvidia_smi(SMI)
    assert [index for index, _ in gpus] == ["0", "1"]
    assert gpus[0][1] == Gpu("NVIDIA H100 80GB HBM3", 79.6)


def test_cuda_visible_devices_restricts():
    gpus = parse_nvidia_smi(SMI)
    assert len(visible_gpus(gpus, None)) == 2
    assert len(visible_gpus(gpus, "1")) == 1
    assert visible_gpus(gpus, "") == []
    assert visible_gpus(gpus, "-1") == []
    assert len(visible_gpus(gpus, "GPU-abc")) == 2  # UUIDs are not resolved
