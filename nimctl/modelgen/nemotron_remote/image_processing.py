"""The twin's image processor (remote code, written for nimctl).

vLLM tiles images itself (InternVL-style dynamic tiling) and reads only `image_size`,
`max_num_tiles` and `use_thumbnail` from the checkpoint's processor, as it does from the real
one. `preprocess` is a one-tile fallback for use outside vLLM (resize, scale to 0..1, no
normalisation: C-RADIO normalises inside the tower).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature


class NimctlNemotronImageProcessor(BaseImageProcessor):
    model_input_names = ["pixel_values"]

    def __init__(
        self,
        image_size: int = 512,
        max_num_tiles: int = 12,
        use_thumbnail: bool = True,
        norm_mean: list[float] | None = None,
        norm_std: list[float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.image_size = image_size
        self.max_num_tiles = max_num_tiles
        self.use_thumbnail = use_thumbnail
        self.norm_mean = norm_mean
        self.norm_std = norm_std

    def preprocess(self, images: Any, **kwargs: Any) -> BatchFeature:
        if not isinstance(images, list | tuple):
            images = [images]
        size = (self.image_size, self.image_size)
        arrays = [
            np.asarray(
                image.convert("RGB").resize(size, Image.Resampling.BICUBIC), dtype=np.float32
            )
            / 255.0
            for image in images
        ]
        pixels = np.stack(arrays).transpose(0, 3, 1, 2)
        return BatchFeature({"pixel_values": pixels}, tensor_type=kwargs.get("return_tensors"))
