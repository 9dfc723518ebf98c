"""`NIM_*` environment settings.

Precedence is CLI flag > `NIM_*` environment > profile YAML > built-in default. This model holds
the first two: CLI flags arrive as constructor keywords (pydantic-settings ranks them above the
environment). A setting that a profile may also supply defaults to ``None`` here, meaning "the
profile decides"; `profiles.apply_settings` does that merge. Nothing reads the environment at
import time and there is no global instance: whoever needs settings builds them once and passes
them on.

Each field's description (and its `group`, and the vLLM argument it feeds) is the documentation:
docs/configuration.md's tables are generated from this model (`nimctl config-doc`), so they
cannot drift from the code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from nimctl.allowlist import ALLOWLIST_SETTING, Allowlist, AllowlistError, parse_allowlist
from nimctl.cors import CorsPolicy, parse_headers, parse_methods, parse_origins
from nimctl.errors import ConfigError
from nimctl.keys import KeyFormatError, parse_key_list, read_key_file, unique
from nimctl.validation_errors import Loc, describe

ENV_PREFIX = "NIM_"

LogLevel = Literal["DEFAULT", "TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
# vLLM 0.32's StructuredOutputsBackend; a unit test keeps this list equal to vLLM's.
GuidedDecodingBackend = Literal["auto", "xgrammar", "guidance", "outlines", "lm-format-enforcer"]
SslMode = Literal["DISABLED", "TLS", "MTLS"]

GROUPS = (
    "Model selection and cache",
    "Server",
    "Security",
    "Logging",
    "Engine",
    "Chat layer",
    "Media intake",
    "LoRA adapters",
    "Admission control",
    "CORS",
    "Observability",
)


# Settings that mean something only with NIM_PEFT_SOURCE (LoRA on).
_LORA_SETTINGS = ("peft_refresh_interval", "max_loras", "max_cpu_loras", "max_lora_rank")


def _field(
    default: Any, group: str, description: str, vllm: str | None = None, **constraints: Any
) -> Any:
    extra: dict[str, Any] = {"group": group}
    if vllm:
        extra["vllm"] = vllm
    return Field(default, description=description, json_schema_extra=extra, **constraints)


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
    model_profile: str | None = _field(
        None,
        GROUPS[0],
        "Profile to serve, by name (`mistral-small-4-119b-2603`), 64-hex id, or unique id prefix "
        "of 8+ digits. Unset: the `tiny` CPU demo when no GPU is visible; with GPUs, start-up "
        "asks for a profile and lists those that fit. Flag: `--profile`.",
    )
    model_path: str | None = _field(
        None,
        GROUPS[0],
        "Model source replacing the profile's: a Hugging Face id (`org/name`) or a local "
        "directory (absolute or `./relative`). Flag: `--model`.",
    )
    served_model_name: str | None = _field(
        None,
        GROUPS[0],
        "The model id of `/v1/models`, and the only `model` value requests may use. Unset: the "
        "profile's.",
    )
    cache_path: Path = _field(
        Path("~/.cache/nim"),
        GROUPS[0],
        "Where models are downloaded or generated and vLLM keeps its caches (`huggingface/`, "
        "`vllm/`, `models/`, and `downloads/`: `nimctl download`'s file lists and the partial "
        "files a cut-off run left for the next). The "
        "container sets `/opt/nim/.cache`, as NIM does; mount a volume there.",
    )
    disable_model_download: bool = _field(
        False,
        GROUPS[0],
        "Never fetch weights: `serve` first checks that the cache holds every file the "
        "profile loads (a missing one stops it at once, named, with the `nimctl download` "
        "command that fetches it) and starts vLLM with `HF_HUB_OFFLINE=1`. For air-gapped "
        "nodes and pods whose cache a `nimctl download` Job filled. A complete cache is used "
        "offline even without it.",
    )
    profiles_path: Path | None = _field(
        None,
        GROUPS[0],
        "A directory of extra profile YAML files, used beside the built-in ones (a name used "
        "twice is an error).",
    )

    # Server.
    server_port: int = _field(8000, GROUPS[1], "HTTP port. Flag: `--port`.", ge=1, le=65535)
    host: str = _field(
        "0.0.0.0", GROUPS[1], "Bind address, IPv4 or IPv6. Flag: `--host`.", min_length=1
    )
    max_request_bytes: int = _field(
        128 * 2**20,
        GROUPS[1],
        "Largest request body, bytes; a larger one gets 413 before it is read.",
        ge=1,
    )
    request_header_timeout: float = _field(
        20.0,
        GROUPS[1],
        "Seconds a client has to send a request's line and headers once it has begun (and a "
        "new connection to begin one); later, 408 and the connection closed, so that slow "
        "clients cannot hold connections open (slowloris). Heads are also capped at 64 KiB "
        "and 100 header fields (431).",
        gt=0,
    )
    request_body_timeout: float = _field(
        30.0,
        GROUPS[1],
        "Seconds a client has to send a request's whole body once its headers are in; later, "
        "408 and the connection closed (a body shorter than its Content-Length holds nothing "
        "open for longer). Raise it for large bodies over slow links.",
        gt=0,
    )
    shutdown_grace_period: float = _field(
        30.0,
        GROUPS[1],
        "Seconds SIGTERM waits for requests in flight (new ones get 503) before the engine "
        "stops. Keep Kubernetes' terminationGracePeriodSeconds above it.",
        ge=0,
    )

    # Security.
    ssl_mode: SslMode = _field(
        "DISABLED",
        GROUPS[2],
        "`DISABLED` (plain HTTP), `TLS` (HTTPS; needs `NIM_SSL_KEY_PATH` and "
        "`NIM_SSL_CERT_PATH`) or `MTLS` (HTTPS with client certificates signed by "
        "`NIM_SSL_CA_CERTS_PATH`); case-insensitive.",
    )
    ssl_key_path: Path | None = _field(None, GROUPS[2], "PEM private key of the server.")
    ssl_cert_path: Path | None = _field(None, GROUPS[2], "PEM certificate (chain) of the server.")
    ssl_ca_certs_path: Path | None = _field(
        None, GROUPS[2], "PEM CA certificates that client certificates must chain to (MTLS)."
    )
    ssl_reload_interval: float = _field(
        5.0,
        GROUPS[2],
        "Seconds between looks at the key, certificate and CA files; when they change (e.g. "
        "cert-manager renewed them), new connections get the new ones, open ones keep theirs. "
        "A key and certificate that do not match keep the old pair, with a warning.",
        gt=0,
    )
    api_key: SecretStr | None = _field(
        None,
        GROUPS[2],
        "API keys: every route but health, metrics and CORS preflight then requires "
        "`Authorization: Bearer <key>` (401 otherwise). Several keys are comma-separated; a key "
        "may carry a name, `name:key` (split at the first `:`; names of letters, digits, `.`, "
        "`_`, `-`, each used once), which labels logs and `nimctl_http_requests_total` "
        "(`key`). Keys are visible ASCII without `,`; compared in constant time, never logged. "
        "NIM itself has no such option.",
    )
    api_key_file: Path | None = _field(
        None,
        GROUPS[2],
        "A file of API keys, one a line (`key` or `name:key`; blank lines and lines starting "
        "with `#` skipped), used beside `NIM_API_KEY`; looked at once a second and re-read when "
        "it changes, so a mounted Secret rotates keys with no restart. A file then unreadable or "
        "empty keeps the keys last read, with a warning.",
    )

    # Logging.
    log_level: LogLevel = _field(
        "DEFAULT",
        GROUPS[3],
        "`DEFAULT` (= INFO), `TRACE` (= DEBUG, with vLLM's and transformers' debug output), "
        "`DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL`; case-insensitive. Applies to nimctl, "
        "uvicorn and vLLM (all its processes).",
    )
    jsonl_logging: bool = _field(
        False,
        GROUPS[3],
        "`1`: every log line, of every process, is one JSON object (NIM's keys: `level`, "
        "`time`, `file_name`, `file_path`, `line_number`, `message`, `exc_info`, plus `logger` "
        "and `request_id`).",
    )
    disable_log_requests: bool = _field(
        True,
        GROUPS[3],
        "`0`: log each chat request's details (prompt, sampling parameters), as NIM defines it.",
    )

    # Engine sizing; unset means the profile's value.
    max_model_len: int | None = _field(
        None, GROUPS[4], "Context length, prompt plus output, in tokens.", "max_model_len", gt=0
    )
    max_images_per_prompt: int | None = _field(
        None,
        GROUPS[4],
        "Images allowed in one request (seed defaults: Mistral Large 3: 10; Mistral Small 4: 5; "
        "Qwen3.5: 5; Nemotron Nano VL: 4). One number feeds nimctl's checks and vLLM's limit.",
        "limit_mm_per_prompt.image",
        ge=0,
    )
    max_videos_per_prompt: int | None = _field(
        None,
        GROUPS[4],
        "Videos allowed in one request; `0` (every profile's default) turns video off.",
        "limit_mm_per_prompt.video",
        ge=0,
    )
    tensor_parallel_size: int | None = _field(
        None,
        GROUPS[4],
        "GPUs per pipeline stage; changes the GPUs the profile needs.",
        "tensor_parallel_size",
        ge=1,
    )
    pipeline_parallel_size: int | None = _field(
        None,
        GROUPS[4],
        "Pipeline stages; GPUs needed = tensor x pipeline.",
        "pipeline_parallel_size",
        ge=1,
    )
    enable_kv_cache_reuse: bool | None = _field(
        None, GROUPS[4], "Reuse the KV cache of shared prompt prefixes.", "enable_prefix_caching"
    )
    kvcache_percent: float | None = _field(
        None,
        GROUPS[4],
        "Fraction of each GPU's memory the engine may use, `(0, 1]`.",
        "gpu_memory_utilization",
        gt=0,
        le=1,
    )
    max_num_seqs: int | None = _field(
        None, GROUPS[4], "Most sequences batched at once.", "max_num_seqs", ge=1
    )
    num_compute_nodes: int | None = _field(
        None,
        GROUPS[4],
        "Machines the profile's GPUs are spread over (NIM's name); past 1 the engine runs on "
        "vLLM's Ray executor, this process is the leader and the others run `nimctl worker`.",
        ge=1,
    )
    distributed_executor_backend: Literal["mp", "ray", "uni"] | None = _field(
        None,
        GROUPS[4],
        "vLLM's executor for tensor / pipeline parallel workers; default: `ray` on more than "
        "one node, else vLLM's choice (`mp`, one process per GPU).",
        "distributed_executor_backend",
    )
    ray_address: str | None = _field(
        None,
        GROUPS[4],
        "An existing Ray cluster (`host:port`) for the leader to join instead of starting the "
        "Ray head itself.",
    )
    ray_port: int = _field(
        6379, GROUPS[4], "Port of the Ray head the leader starts.", ge=1, le=65535
    )
    cluster_start_timeout: float = _field(
        300.0,
        GROUPS[4],
        "Seconds the leader waits for every node to join the Ray cluster (Helm's "
        "multiNode.clusterStartTimeout).",
        gt=0,
    )
    leader_address: str | None = _field(
        None,
        GROUPS[4],
        "Where `nimctl worker` finds the leader (host or IP); default: LeaderWorkerSet's "
        "LWS_LEADER_ADDRESS.",
    )
    passthrough_args: str | None = _field(
        None,
        GROUPS[4],
        "Extra engine arguments as one `vllm serve`-style string, e.g. `--max-num-batched-tokens "
        "8192`; they win over every other source. Arguments nimctl owns (`--model`, "
        "`--served-model-name`, `--limit-mm-per-prompt`, `--reasoning-parser`, media fetching) "
        "are refused with the variable to use instead.",
        "any",
    )

    # Chat layer.
    tool_call_parser: str | None = _field(
        None,
        GROUPS[5],
        "vLLM tool-call parser (`mistral`, `hermes`, `qwen3_coder`, `llama3_json`, ...); setting "
        "one enables automatic tool choice. Unset: the profile's.",
        "tool_call_parser",
    )
    chat_template: Path | None = _field(
        None,
        GROUPS[5],
        "Path of a Jinja chat template file that replaces the model's.",
        "chat_template",
    )
    guided_decoding_backend: GuidedDecodingBackend | None = _field(
        None,
        GROUPS[5],
        "Structured-output backend: `auto`, `xgrammar`, `guidance`, `outlines`, "
        "`lm-format-enforcer`.",
        "structured_outputs_config.backend",
    )

    # Media intake.
    media_allowlist: str = _field(
        "",
        GROUPS[6],
        "Comma-separated hosts (`images.example.com`, `*.corp.internal`) and networks "
        "(`10.0.0.0/8`, `::1`) that media URLs may reach although they are not public.",
    )
    media_local_path: Path | None = _field(
        None, GROUPS[6], "A directory whose files requests may name as `file://` URLs."
    )
    media_url_fetching: bool = _field(
        True, GROUPS[6], "`0`: refuse http(s) media URLs; only `data:` (and local) media."
    )
    media_connect_timeout: float = _field(5.0, GROUPS[6], "Seconds to connect.", gt=0)
    media_read_timeout: float = _field(10.0, GROUPS[6], "Seconds without data.", gt=0)
    media_fetch_timeout: float = _field(
        30.0, GROUPS[6], "Seconds for one URL in all, redirects and retries included.", gt=0
    )
    media_max_redirects: int = _field(
        3, GROUPS[6], "Redirects followed per URL, each checked like the first.", ge=0, le=20
    )
    media_fetch_retries: int = _field(
        2,
        GROUPS[6],
        "Extra attempts after a connection error, 5xx or 429, with back-off.",
        ge=0,
        le=10,
    )
    media_max_concurrent_fetches: int = _field(
        16, GROUPS[6], "URLs fetched at once, over all requests.", ge=1
    )
    media_max_image_bytes: int = _field(
        20 * 2**20,
        GROUPS[6],
        "Largest image file, bytes (base64 measured before decoding).",
        ge=1,
    )
    media_max_image_pixels: int = _field(
        25_000_000, GROUPS[6], "Most pixels an image may have, checked before decoding.", ge=1
    )
    media_max_video_bytes: int = _field(100 * 2**20, GROUPS[6], "Largest video file, bytes.", ge=1)

    # LoRA adapters (NIM 2.x names; NIM 1.x called NIM_MAX_LORAS NIM_MAX_GPU_LORAS).
    peft_source: Path | None = _field(
        None,
        GROUPS[7],
        "A directory of LoRA adapters, one sub-directory each in PEFT format "
        "(`adapter_config.json` + `adapter_model.safetensors`); the sub-directory's name is the "
        "`model` a request uses. Setting it turns on vLLM's LoRA support (`enable_lora`).",
    )
    peft_refresh_interval: float | None = _field(
        None,
        GROUPS[7],
        "Seconds between scans of `NIM_PEFT_SOURCE`: adapters added there are loaded, removed "
        "ones unloaded, with no restart. Unset: scanned once, at start. Needs NIM_PEFT_SOURCE.",
        gt=0,
    )
    max_loras: int | None = _field(
        None,
        GROUPS[7],
        "Adapters used in one batch (held in GPU memory at once). Unset: vLLM's default. Needs "
        "NIM_PEFT_SOURCE.",
        "max_loras",
        ge=1,
    )
    max_cpu_loras: int | None = _field(
        None,
        GROUPS[7],
        "Adapters kept in CPU memory, at least `NIM_MAX_LORAS`. Unset: vLLM's default. Needs "
        "NIM_PEFT_SOURCE.",
        "max_cpu_loras",
        ge=1,
    )
    max_lora_rank: int | None = _field(
        None,
        GROUPS[7],
        "Largest adapter rank accepted; an adapter of a higher rank is refused at load. Unset: "
        "vLLM's default. Needs NIM_PEFT_SOURCE.",
        "max_lora_rank",
        ge=1,
    )

    # Admission control.
    max_queued_requests: int | None = _field(
        None,
        GROUPS[8],
        "Most requests admitted at once (waiting and running; a request with `n` choices "
        "counts `n`); one more gets 429 with `Retry-After`, before its media is fetched. "
        "Unset: no limit.",
        ge=1,
    )
    max_queued_tokens: int | None = _field(
        None,
        GROUPS[8],
        "Most prompt tokens, estimated before any media is decoded, of admitted requests that "
        "have not yet produced their first token; past it, 429 with `Retry-After`. Unset: no "
        "limit.",
        ge=1,
    )

    # CORS (off unless origins are given).
    cors_allow_origins: str = _field(
        "",
        GROUPS[9],
        "Comma-separated origins browsers may call from (`https://app.example.com`: scheme, "
        "host and port, nothing after), or `*`. Empty: CORS off (no CORS headers at all). A "
        "preflight is answered without an API key; other answers, errors included, carry the "
        "CORS headers.",
    )
    cors_allow_methods: str = _field(
        "GET,POST,OPTIONS", GROUPS[9], "Comma-separated methods allowed cross-origin, or `*`."
    )
    cors_allow_headers: str = _field(
        "*",
        GROUPS[9],
        "Comma-separated request headers allowed cross-origin (`Authorization`, "
        "`Content-Type`, ...), or `*`.",
    )
    cors_expose_headers: str = _field(
        "X-Request-Id",
        GROUPS[9],
        "Comma-separated response headers a browser script may read (beyond the CORS-safelisted "
        "ones).",
    )
    cors_max_age: int = _field(
        600, GROUPS[9], "Seconds a browser may cache a preflight answer.", ge=0
    )

    # Observability.
    enable_otel: bool = _field(
        False,
        GROUPS[10],
        "`1`: OpenTelemetry traces, one per request (nimctl's spans and vLLM's engine span), "
        "sent by OTLP. Configured by the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT` "
        "(or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), `OTEL_EXPORTER_OTLP_PROTOCOL` "
        "(`http/protobuf`, the default, or `grpc`), `OTEL_SERVICE_NAME` (default `nimctl`), "
        "`OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, `OTEL_RESOURCE_ATTRIBUTES`. "
        "Off: no tracing code runs at all. See docs/observability.md.",
    )

    @field_validator("log_level", "ssl_mode", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "chat_template", "ssl_key_path", "ssl_cert_path", "ssl_ca_certs_path", "api_key_file"
    )
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.expanduser().is_file():
            raise ValueError(f"no file at {value}")
        return value

    @field_validator("api_key")
    @classmethod
    def _keys_parse(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                parse_key_list(value.get_secret_value())
            except KeyFormatError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _key_file_parses(self) -> NimSettings:
        """The file as it is now, with NIM_API_KEY's keys (a name in both is refused)."""
        if self.api_key_file is not None:
            fixed = parse_key_list(self.api_key.get_secret_value()) if self.api_key else ()
            try:
                unique((*fixed, *read_key_file(self.api_key_file)), "NIM_API_KEY and the file")
            except KeyFormatError as exc:
                raise ValueError(f"NIM_API_KEY_FILE={self.api_key_file}: {exc}") from None
        return self

    @field_validator("cors_allow_origins")
    @classmethod
    def _origins_parse(cls, value: str) -> str:
        parse_origins(value)
        return value

    @field_validator("cors_allow_methods")
    @classmethod
    def _methods_parse(cls, value: str) -> str:
        parse_methods(value)
        return value

    @field_validator("cors_allow_headers", "cors_expose_headers")
    @classmethod
    def _headers_parse(cls, value: str) -> str:
        parse_headers(value)
        return value

    @property
    def cors(self) -> CorsPolicy | None:
        """NIM_CORS_* as CORSMiddleware's arguments; None (CORS off) without origins."""
        return CorsPolicy.parse(
            self.cors_allow_origins,
            self.cors_allow_methods,
            self.cors_allow_headers,
            self.cors_expose_headers,
            self.cors_max_age,
        )

    @field_validator("media_allowlist")
    @classmethod
    def _allowlist_parses(cls, value: str) -> str:
        try:
            parse_allowlist(value)
        except AllowlistError as exc:
            raise ValueError(str(exc).removeprefix(f"{ALLOWLIST_SETTING}: ")) from None
        return value

    @property
    def media_allow(self) -> Allowlist:
        """NIM_MEDIA_ALLOWLIST as (hosts, networks); validated with the settings."""
        return parse_allowlist(self.media_allowlist)

    @model_validator(mode="after")
    def _lora_needs_source(self) -> NimSettings:
        # Refused rather than ignored: without NIM_PEFT_SOURCE LoRA is off, so these would be
        # silently meaningless, and whoever set them expects adapters to be served.
        if self.peft_source is None:
            given = [name for name in _LORA_SETTINGS if getattr(self, name) is not None]
            if given:
                names = ", ".join(f"{ENV_PREFIX}{name.upper()}" for name in given)
                raise ValueError(
                    f"{names} {'apply' if len(given) > 1 else 'applies'} only to LoRA "
                    f"adapters, which need {ENV_PREFIX}PEFT_SOURCE: "
                    "set it to the adapters' directory, or unset them"
                )
        return self

    @model_validator(mode="after")
    def _ssl_complete(self) -> NimSettings:
        needed = {
            "TLS": ("ssl_key_path", "ssl_cert_path"),
            "MTLS": ("ssl_key_path", "ssl_cert_path", "ssl_ca_certs_path"),
        }
        missing = [env_name(f) for f in needed.get(self.ssl_mode, ()) if getattr(self, f) is None]
        if missing:
            raise ValueError(f"NIM_SSL_MODE={self.ssl_mode} needs {' and '.join(missing)}")
        return self

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


class _PodSettings(NimSettings):
    """NimSettings from the given values alone, for a pod: no process environment, and files
    named are the pod's (a mounted Secret), so they are not looked for on this machine."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    @field_validator(
        "chat_template", "ssl_key_path", "ssl_cert_path", "ssl_ca_certs_path", "api_key_file"
    )
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        return value

    @model_validator(mode="after")
    def _key_file_parses(self) -> _PodSettings:
        return self


def settings_for_pod(env: Mapping[str, str], where: str = "values env.") -> NimSettings:
    """The settings a pod with environment `env` (its `NIM_*` variables) will start with.

    `nimctl k8s` validates a values file's `env:` with this, so a value that would stop
    `nimctl serve` in every pod stops the rendering, with the same message. The process's own
    environment plays no part, and files are the pod's, so their existence is not checked.
    Unknown `NIM_*` names are refused (a typo would otherwise pass silently into every pod).
    """
    data: dict[str, Any] = {  # strings, which the settings parse as the environment's
        key[len(ENV_PREFIX) :].lower(): value
        for key, value in env.items()
        if key.upper().startswith(ENV_PREFIX) and value != ""  # as env_ignore_empty does
    }
    try:
        return _PodSettings(**data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, {}, env_label=where)) from None


def describe_validation_error(
    exc: ValidationError, cli: Mapping[str, Any], env_label: str = ""
) -> str:
    """One line naming each bad value by where it came from: its CLI flag (a key of `cli`), else
    its variable, after `env_label` (a values file's `env.`)."""

    def where(loc: Loc) -> str:
        if not loc:  # a rule across several settings names them itself
            return "settings"
        field = str(loc[0])
        return f"--{field.replace('_', '-')}" if field in cli else env_label + env_name(field)

    lines = describe(
        exc,
        where,
        unknown="not a nimctl setting (docs/configuration.md lists them)",
        secret=lambda loc: loc[:1] == ("api_key",),
    )
    return "; ".join(f"invalid {line}" for line in lines)


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def engine_arg_settings() -> dict[str, str]:
    """Setting -> the vLLM engine argument it sets directly (a top-level argument: not a part of
    one, like `limit_mm_per_prompt.image`, nor NIM_PASSTHROUGH_ARGS), from the fields' metadata."""
    out = {}
    for name, field in NimSettings.model_fields.items():
        extra = field.json_schema_extra
        arg = extra.get("vllm") if isinstance(extra, dict) else None
        if isinstance(arg, str) and arg != "any" and "." not in arg:
            out[name] = arg
    return out


def unknown_nim_variables(environ: Mapping[str, object] | None = None) -> list[str]:
    """`NIM_*` variables that nimctl does not read: most often a typo worth a warning."""
    environ = os.environ if environ is None else environ
    known = {env_name(name) for name in NimSettings.model_fields}
    return sorted(
        key for key in environ if key.upper().startswith(ENV_PREFIX) and key.upper() not in known
    )


def settings_tables() -> str:
    """The Markdown tables of every setting, by group, as docs/configuration.md shows them."""
    out = []
    for group in GROUPS:
        rows = []
        for name, field in NimSettings.model_fields.items():
            extra = field.json_schema_extra
            if not isinstance(extra, dict) or extra.get("group") != group:
                continue
            shown = _shown_default(field.default)
            vllm = f"`{extra['vllm']}`" if extra.get("vllm") else ""
            rows.append(f"| `{env_name(name)}` | {shown} | {vllm} | {field.description} |")
        out.append(
            f"### {group}\n\n| Variable | Default | vLLM argument | Meaning |\n"
            f"|---|---|---|---|\n" + "\n".join(rows)
        )
    return "\n\n".join(out) + "\n"


def _shown_default(default: Any) -> str:
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return "`1`" if default else "`0`"
    if default == "":
        return "empty"
    return f"`{default}`"


def require_peft_directory(path: Path) -> None:
    """What `serve` and `check` refuse: a NIM_PEFT_SOURCE that is not a directory. Checked
    when the engine configuration is (the directory may be mounted after the settings are
    read), and again by the adapter sync at start."""
    if not path.is_dir():
        raise ConfigError(f"invalid NIM_PEFT_SOURCE={str(path)!r}: no such directory")
