"""Configuration of nimctl's tiny Llama 3.1 Nemotron Nano VL twin (remote code, written for nimctl).

Loaded by transformers from the model directory (`config.json` `auto_map`), because
`Llama_Nemotron_Nano_VL` is a model type neither transformers nor vLLM 0.32 registers: the real
checkpoint ships its own configuration code too. It keeps the real top-level keys vLLM reads
(`llm_config`, `vision_config`, `force_image_size`, `downsample_ratio`, `ps_version`,
`vit_hidden_size`, `projector_hidden_size`).

The vision tower: the real `vision_config` names C-RADIO code in another hub repository, which a
machine without network access cannot load. Here it is transformers' own `RadioConfig` whose
`auto_map` names `radio_twin.TwinRadioModel`, resolved against this directory: `_name_or_path` is
copied from the outer config. No class is registered at import time, because vLLM sends this
config to its worker processes by value, where a registration keyed on the class would miss.
"""

from __future__ import annotations

from typing import Any

from transformers import LlamaConfig, PreTrainedConfig, RadioConfig


class NimctlNemotronVLConfig(PreTrainedConfig):
    model_type = "Llama_Nemotron_Nano_VL"
    sub_configs = {"llm_config": LlamaConfig, "vision_config": RadioConfig}

    def __init__(
        self,
        vision_config: dict[str, Any] | RadioConfig | None = None,
        llm_config: dict[str, Any] | LlamaConfig | None = None,
        force_image_size: int | None = None,
        downsample_ratio: float = 0.5,
        ps_version: str = "v2",
        template: str | None = None,
        image_tag_type: str = "internvl",
        vit_hidden_size: int = 1280,
        projector_hidden_size: int = 4096,
        **kwargs: Any,
    ) -> None:
        # **kwargs: vLLM passes attn_implementation="eager" for this model type, and the
        # common keys (architectures, dtype, auto_map, name_or_path) arrive here too.
        super().__init__(**kwargs)
        vision = RadioConfig(**vision_config) if isinstance(vision_config, dict) else vision_config
        llm = LlamaConfig(**llm_config) if isinstance(llm_config, dict) else llm_config
        self.vision_config = vision if vision is not None else RadioConfig()
        self.llm_config = llm if llm is not None else LlamaConfig()
        # AutoModel.from_config(vision_config) loads the auto_map class from here.
        self.vision_config._name_or_path = self._name_or_path
        self.force_image_size = force_image_size
        self.downsample_ratio = downsample_ratio
        self.ps_version = ps_version
        self.template = template
        self.image_tag_type = image_tag_type
        self.vit_hidden_size = vit_hidden_size
        self.projector_hidden_size = projector_hidden_size
