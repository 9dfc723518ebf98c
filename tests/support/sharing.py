"""The e2e server that one replica shared by several teams runs: LoRA adapters from a directory,
queue limits, and traces exported to a receiver in the test. One per session (an engine start is
the costly part); the LoRA, admission and tracing test modules use it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nimctl.modelgen.lora import write_adapter
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.server import Server, start_server

GOOD_ADAPTERS = ("style-a", "style-b")
TOO_BIG_ADAPTER = "too-big"  # rank 16 > NIM_MAX_LORA_RANK=8
ODD_ADAPTER = "odd-module"  # weights for a module the model does not have
QUEUE_LIMIT = 2


@dataclass
class Sharing:
    server: Server
    adapters_dir: Path
    receiver: OtlpReceiver


def write_adapters(root: Path) -> None:
    for seed, name in enumerate(GOOD_ADAPTERS, start=1):
        write_adapter(root / name, seed=seed)
    write_adapter(root / TOO_BIG_ADAPTER, seed=3, rank=16)
    write_adapter(root / ODD_ADAPTER, seed=4, unknown_module=True)


def start_sharing_server(adapters_dir: Path, log: Path, receiver: OtlpReceiver) -> Server:
    write_adapters(adapters_dir)
    env = {
        "NIM_ENABLE_OTEL": "1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_SERVICE_NAME": "nimctl-e2e",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms between batch exports: spans arrive quickly
        "NIM_PEFT_SOURCE": str(adapters_dir),
        "NIM_PEFT_REFRESH_INTERVAL": "1",
        "NIM_MAX_LORA_RANK": "8",
        "NIM_MAX_LORAS": "2",
        "NIM_MAX_CPU_LORAS": "4",
        "NIM_MAX_QUEUED_REQUESTS": str(QUEUE_LIMIT),
        "NIM_MAX_QUEUED_TOKENS": "100000",
    }
    return start_server("tiny", log, env)
