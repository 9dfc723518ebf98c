"""Offline builders of the small random-weight models that demos and tests serve.

Data generators, not the engine seam: each writes a checkpoint (config, weights, tokenizer,
processor configuration, chat template) into the model cache, and vLLM then loads it through the
same code it uses for a real checkpoint. Nothing here imports vLLM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Builtin:
    """A model nimctl generates. `cpu_torchvision`: vLLM's module for its architecture imports
    torchvision, which a CPU install lacks (nimctl/engine/cpu_torchvision.py)."""

    build: Callable[[Path], Path]
    cpu_torchvision: bool = False


def _idefics3(cache: Path) -> Path:
    from nimctl.modelgen.idefics3 import ensure_tiny_model

    return ensure_tiny_model(cache)


def _mistral_small4(cache: Path) -> Path:
    from nimctl.modelgen.mistral import SMALL4, ensure_mistral_model

    return ensure_mistral_model(cache, SMALL4)


def _mistral_large3(cache: Path) -> Path:
    from nimctl.modelgen.mistral import LARGE3, ensure_mistral_model

    return ensure_mistral_model(cache, LARGE3)


def _nemotron(cache: Path) -> Path:
    from nimctl.modelgen.nemotron import ensure_nemotron_model

    return ensure_nemotron_model(cache)


def _qwen35(cache: Path) -> Path:
    from nimctl.modelgen.qwen35 import ensure_qwen35_model

    return ensure_qwen35_model(cache)


# A profile's `model: builtin:<name>`, and what makes it. Builders import torch and transformers,
# so each is imported only when its model is asked for.
BUILTINS: dict[str, Builtin] = {
    "tiny-idefics3": Builtin(_idefics3),
    "tiny-qwen3.5": Builtin(_qwen35, cpu_torchvision=True),
    # vLLM's pixtral module imports transformers' Pixtral image processor, which imports
    # torchvision, although the native path processes images with mistral_common.
    "tiny-mistral-small4": Builtin(_mistral_small4, cpu_torchvision=True),
    "tiny-mistral-large3": Builtin(_mistral_large3, cpu_torchvision=True),
    # vLLM's nemotron_vl processor tiles images with torchvision transforms.
    "tiny-nemotron-nano-vl": Builtin(_nemotron, cpu_torchvision=True),
}


def ensure_model(name: str, cache: Path) -> Path:
    """The directory of generated model `name` in `cache`, built first if needed.

    KeyError for a name no builder makes; the caller words the message.
    """
    return BUILTINS[name].build(cache)
