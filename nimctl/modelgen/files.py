"""What every generated model directory gets: a LICENSE that says what it is, and weights saved
without progress bars (they are noise in server logs and test output) or, for checkpoints in
Mistral's native format, drawn from a seed so that every build is byte-identical."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_APACHE = """\
Licensed under the Apache License, Version 2.0 (the "License"); you may not use these
files except in compliance with the License. You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software distributed under the
License is distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND,
either express or implied. See the License for the specific language governing permissions
and limitations under the License.
"""


def write_license(out: Path, title: str, description: str) -> None:
    """`description`: what the directory holds and that it was generated, not trained."""
    text = f"{title}\n\n{description.strip()}\n\n{_APACHE}"
    (out / "LICENSE").write_text(text, encoding="utf-8")


def save_pretrained_quietly(model: Any, out: Path) -> None:
    from transformers.utils import logging as hf_logging

    bars_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(str(out))
    finally:
        if bars_on:
            hf_logging.enable_progress_bar()


def save_seeded_weights(path: Path, shapes: dict[str, tuple[int, ...]], seed: int) -> None:
    """Random bf16 safetensors for a checkpoint in Mistral's native (consolidated) format.

    Drawn in `shapes`' order from a private generator, so the caller's global torch RNG stays
    untouched and the same shapes and seed give the same bytes. Vectors are norm gains and get
    ones (a random gain near 0 would zero the activations); matrices get N(0, 0.02), drawn in
    float32 and stored bf16, which vLLM on CPU runs anyway.
    """
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in shapes.items():
        if len(shape) == 1:
            tensor = torch.ones(shape)
        else:
            tensor = torch.randn(shape, generator=generator) * 0.02
        tensors[name] = tensor.to(torch.bfloat16).contiguous()
    save_file(tensors, str(path), metadata={"format": "pt"})
