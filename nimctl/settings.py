"""`NIM_*` environment settings.

Precedence is CLI flag > `NIM_*` environment > profile YAML > built-in default. This model holds
the first two: CLI flags arrive as constructor keywords (pydantic-settings ranks them above the
environment). A setting that a profile may also supply defaults to ``None`` here, meaning "the
profile decides"; `profiles.apply_settings` does that merge. Nothing reads the environment at
import time and there is no global instance: whoever needs settings builds them once and passes
them on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from nimctl.errors import ConfigError

ENV_PREFIX = "NIM_"

LogLevel = Literal["DEFAULT", "TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
# vLLM 0.32's StructuredOutputsBackend; a unit test keeps this list equal to vLLM's.
GuidedDecodingBackend = Literal["auto", "xgrammar", "guidance", "outlines", "lm-format-enforcer"]


class NimSettings(BaseSettings):
    """Every `NIM_*` variable nimctl reads, with its default and meaning."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        env_ignore_empty=True,
        extra="forbid",
        validate_default=True,
    )

    # Model selection and cache.
    model_profile: str | None = Field(
        None,
        description="Profile to serve, by name or id (64-hex, or a unique prefix of 8+). "
        "Unset: the `tiny` CPU demo when no GPU is visible, else start-up asks for one.",
    )
    model_path: str | None = Field(
        None,
        description="Overrides the profile's model source: a Hugging Face id or a local directory.",
    )
    served_model_name: str | None = Field(
        None,
        description="Model id shown by /v1/models and accepted in requests' `model`. "
        "Unset: the profile's.",
    )
    cache_path: Path = Field(
        Path("~/.cache/nim"),
        description="Cache for models (downloaded or generated). The container sets "
        "/opt/nim/.cache, as NIM does.",
    )
    profiles_path: Path | None = Field(
        None,
        description="A directory of extra profile YAML files, added to the built-in ones.",
    )

    # Server.
    server_port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    host: str = Field("0.0.0.0", min_length=1, description="Bind address.")

    # Logging.
    log_level: LogLevel = Field(
        "DEFAULT",
        description="DEFAULT (= INFO), TRACE (= DEBUG, vLLM included), DEBUG, INFO, WARNING, "
        "ERROR, CRITICAL; case-insensitive.",
    )
    jsonl_logging: bool = Field(False, description="One JSON object per log line.")
    disable_log_requests: bool = Field(
        True,
        description="Set to 0 to log each chat request's details (prompt, sampling parameters).",
    )

    # Engine sizing; unset means the profile's value.
    max_model_len: int | None = Field(None, gt=0, description="Maximum context length (tokens).")
    max_images_per_prompt: int | None = Field(
        None,
        ge=0,
        description="Images allowed in one request; also vLLM's limit_mm_per_prompt.image.",
    )
    max_videos_per_prompt: int | None = Field(
        None,
        ge=0,
        description="Videos allowed in one request (0 disables video); also "
        "limit_mm_per_prompt.video.",
    )
    tensor_parallel_size: int | None = Field(None, ge=1, description="Tensor-parallel GPUs.")
    pipeline_parallel_size: int | None = Field(None, ge=1, description="Pipeline stages.")
    enable_kv_cache_reuse: bool | None = Field(
        None, description="Prefix caching (vLLM enable_prefix_caching)."
    )
    kvcache_percent: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Fraction of GPU memory the engine may use (vLLM gpu_memory_utilization).",
    )
    max_num_seqs: int | None = Field(None, ge=1, description="Most sequences batched at once.")

    # Chat layer.
    tool_call_parser: str | None = Field(
        None, description="vLLM tool-call parser name; enables automatic tool choice."
    )
    chat_template: Path | None = Field(
        None, description="Path of a Jinja chat template replacing the model's."
    )
    guided_decoding_backend: GuidedDecodingBackend | None = Field(
        None,
        description="Structured-output backend: auto, xgrammar, guidance, outlines, "
        "lm-format-enforcer.",
    )
    passthrough_args: str | None = Field(
        None,
        description="Extra vLLM engine arguments as one command-line string, e.g. "
        "'--max-num-batched-tokens 8192'. They win over every other source.",
    )

    # Media intake: fetching and checking images and videos that requests carry.
    media_allowlist: str = Field(
        "",
        description="Comma-separated hosts (images.example.com, *.corp.internal) and networks "
        "(10.0.0.0/8, ::1) whose non-public addresses media URLs may still reach.",
    )
    media_local_path: Path | None = Field(
        None, description="A directory whose files requests may name as file:// URLs."
    )
    media_url_fetching: bool = Field(
        True, description="Fetch http(s) media URLs; 0 accepts base64 data: URLs only."
    )
    media_connect_timeout: float = Field(5.0, gt=0, description="Seconds to connect.")
    media_read_timeout: float = Field(10.0, gt=0, description="Seconds between two reads.")
    media_fetch_timeout: float = Field(
        30.0, gt=0, description="Seconds for one URL, redirects and retries included."
    )
    media_max_redirects: int = Field(3, ge=0, le=20, description="Redirects followed per URL.")
    media_fetch_retries: int = Field(
        2, ge=0, le=10, description="Extra attempts after a transient failure (5xx, 429, reset)."
    )
    media_max_concurrent_fetches: int = Field(
        16, ge=1, description="URLs fetched at once, over all requests."
    )
    media_max_image_bytes: int = Field(
        20 * 2**20, ge=1, description="Largest image file, bytes (base64 counted decoded)."
    )
    media_max_image_pixels: int = Field(
        25_000_000, ge=1, description="Most pixels an image may have (width x height)."
    )
    media_max_video_bytes: int = Field(100 * 2**20, ge=1, description="Largest video file, bytes.")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("chat_template")
    @classmethod
    def _template_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.expanduser().is_file():
            raise ValueError(f"no file at {value}; give the path of a Jinja template file")
        return value

    @property
    def cache_dir(self) -> Path:
        return self.cache_path.expanduser()


def load_settings(**cli: Any) -> NimSettings:
    """Build settings from CLI keywords (None means "not given") and the environment.

    Raises ConfigError with one line per bad value, naming the variable and what it accepts.
    """
    given = {key: value for key, value in cli.items() if value is not None}
    try:
        return NimSettings(**given)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, given)) from None


def describe_validation_error(exc: ValidationError, cli: Mapping[str, Any]) -> str:
    lines = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "?"
        source = f"--{field.replace('_', '-')}" if field in cli else env_name(field)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "not a nimctl setting"
        lines.append(f"invalid {source}={err.get('input')!r}: {message}")
    return "; ".join(lines)


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def unknown_nim_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """`NIM_*` variables that nimctl does not read: most often a typo worth a warning."""
    environ = os.environ if environ is None else environ
    known = {env_name(name) for name in NimSettings.model_fields}
    return sorted(
        key for key in environ if key.upper().startswith(ENV_PREFIX) and key.upper() not in known
    )
