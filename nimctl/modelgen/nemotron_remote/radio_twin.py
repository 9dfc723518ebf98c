"""The twin's vision tower (remote code, written for nimctl): transformers' C-RADIO at tiny size.

vLLM's `LlamaNemotronVLChatModel` calls the tower as `vision_model(x=pixel_values).features`,
the interface of the real checkpoint's C-RADIO code; transformers' `RadioModel` takes
`pixel_values`. This adapts the call and casts the input to the tower's dtype (vLLM hands over
float32 pixels; the checkpoint is bf16, as vLLM's projector expects).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import RadioModel


class TwinRadioModel(RadioModel):
    def forward(
        self,
        x: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        pixels = x if x is not None else pixel_values
        if pixels is None:
            raise ValueError("TwinRadioModel needs pixel values (x or pixel_values)")
        return super().forward(pixel_values=pixels.to(self.dtype), **kwargs)
