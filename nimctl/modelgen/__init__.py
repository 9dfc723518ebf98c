"""Offline builders of the small random-weight models that demos and tests serve.

Data generators, not the engine seam: each writes a checkpoint (config, weights, tokenizer,
processor configuration, chat template) into the model cache, and vLLM then loads it through the
same code it uses for a real checkpoint. Nothing here imports vLLM.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def _idefics3(cache: Path) -> Path:
    from nimctl.modelgen.idefics3 import ensure_tiny_model

    return ensure_tiny_model(cache, "idefics3")


def _idefics3_mistral(cache: Path) -> Path:
    from nimctl.modelgen.idefics3 import ensure_tiny_model

    return ensure_tiny_model(cache, "mistral")


def _tekken(cache: Path) -> Path:
    from nimctl.modelgen.tekken import ensure_tekken_model

    return ensure_tekken_model(cache)


# A profile's `model: builtin:<name>`, and the builder that makes it. Builders import torch and
# transformers, so each is imported only when its model is asked for.
BUILDERS: dict[str, Callable[[Path], Path]] = {
    "tiny-idefics3": _idefics3,
    "tiny-idefics3-mistral": _idefics3_mistral,
    "tiny-tekken": _tekken,
}


def ensure_model(name: str, cache: Path) -> Path:
    """The directory of generated model `name` in `cache`, built first if needed.

    KeyError for a name no builder makes; the caller words the message.
    """
    return BUILDERS[name](cache)
