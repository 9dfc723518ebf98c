"""Model profiles: one validated YAML file per model, selected by name, id or hardware.

A profile is data, not code: the model source and served id, the vLLM engine arguments, the
parsers, NIM's per-model defaults (image and video limits, formats, shared memory) and the GPUs
it needs. Like NIM's, each profile has a stable id, the SHA-256 of its resolved content, so that a
deployment pinned to an id notices when the profile it meant has changed.

A profile may ``extends:`` another: the parent's mapping is deep-merged under the child's
(mappings merge, everything else is replaced), then the result is validated as a whole.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from nimctl.errors import ConfigError
from nimctl.settings import NimSettings, engine_arg_settings
from nimctl.validation_errors import describe, key_path

TINY_PROFILE = "tiny"
BUILTIN_SCHEME = "builtin:"
ImageFormat = Literal["gif", "jpeg", "png", "webp", "bmp"]
_UNKNOWN_KEY = "unknown key (docs/profiles.md lists the keys)"

# Engine arguments that a profile states through its own fields, so that one value feeds
# both the guard and vLLM and cannot disagree.
# vLLM engine arguments that nimctl sets from its own settings or profile fields, because it
# enforces them too (guards, media intake, the model list); neither a profile's engine_args nor
# NIM_PASSTHROUGH_ARGS may set them. Argument -> where to set it instead.
OWNED_ENGINE_ARGS = {
    "model": "the profile's model or NIM_MODEL_PATH",
    "max_num_queued_reqs": "NIM_MAX_QUEUED_REQUESTS (nimctl admits before fetching media)",
    "max_num_queued_tokens": "NIM_MAX_QUEUED_TOKENS (nimctl admits before fetching media)",
    "served_model_name": "the profile's served_model_name or NIM_SERVED_MODEL_NAME",
    "limit_mm_per_prompt": "max_images_per_prompt / max_videos_per_prompt "
    "(NIM_MAX_IMAGES_PER_PROMPT / NIM_MAX_VIDEOS_PER_PROMPT)",
    "reasoning_parser": "the profile's reasoning_parser",
    "tool_call_parser": "the profile's tool_call_parser or NIM_TOOL_CALL_PARSER",
    "enable_auto_tool_choice": "the profile's tool_call_parser or NIM_TOOL_CALL_PARSER",
    "chat_template": "the profile's chat_template or NIM_CHAT_TEMPLATE",
    "allowed_media_domains": "NIM_MEDIA_ALLOWLIST (nimctl fetches media)",
    "allowed_local_media_path": "NIM_MEDIA_LOCAL_PATH (nimctl reads media)",
    "enable_lora": "NIM_PEFT_SOURCE (nimctl loads the adapters)",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Hardware(_Strict):
    """What the profile needs to run; `gpus: 0` means it runs on CPU."""

    gpus: int = Field(0, ge=0, description="GPUs needed: tensor x pipeline parallel size.")
    nodes: int = Field(
        1, ge=1, description="Machines the GPUs are spread over (vLLM's Ray executor past 1)."
    )
    gpu_memory_gib: float = Field(0, ge=0, description="Memory each GPU needs, GiB.")
    precision: str = Field("bf16", description="Weight precision, e.g. fp8, bf16, fp32.")
    weights_gib: float = Field(0, ge=0, description="Size of the weights, GiB.")


class Rules(_Strict):
    """The request rules a model's NIM documents; each switches on a guard or a translation."""

    strict_alternation: bool = Field(
        False, description="After an optional system message, user and assistant alternate."
    )
    mistral_tokenizer: bool = Field(
        False,
        description="Mistral's tokenizer renders a built-in template: no request "
        "chat_template_kwargs.",
    )
    chat_template_kwargs: tuple[str, ...] = Field(
        (), description="Request chat_template_kwargs keys the model's template uses."
    )
    reasoning_efforts: tuple[str, ...] = Field(
        (), description="Accepted reasoning_effort values; empty: the request may not set it."
    )
    stream_include_reasoning_false: bool = Field(
        True, description="Whether include_reasoning=false is accepted for streams."
    )
    request_mm_kwargs: bool = Field(
        False, description="Requests may set media_io_kwargs and mm_processor_kwargs."
    )
    html_img_tags: bool = Field(
        False, description='<img src="..."> tags in text content become image parts.'
    )
    images_before_text: bool = Field(
        False, description="Image parts are moved before text parts in each message."
    )


class Profile(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str = ""
    model: str = Field(min_length=1, description="HF id, local directory or builtin:<name>.")
    served_model_name: str = Field(min_length=1)
    license: str | None = None
    shm_size: str = Field(pattern=r"^[0-9]+(GB|GiB|MB|MiB)$")
    max_images_per_prompt: int = Field(ge=0)
    max_videos_per_prompt: int = Field(0, ge=0)
    video_input: bool = Field(False, description="The model accepts video at all.")
    image_formats: tuple[ImageFormat, ...] = ("gif", "jpeg", "png")
    reasoning_parser: str | None = None
    reasoning_default: bool = Field(
        False, description="Whether the model reasons when a request does not say."
    )
    tool_call_parser: str | None = None
    chat_template: str | None = None
    default_chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)
    engine_args: dict[str, Any] = Field(default_factory=dict)
    hardware: Hardware = Hardware()
    rules: Rules = Rules()

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        for key, instead in OWNED_ENGINE_ARGS.items():
            if key in self.engine_args:
                raise ValueError(f"engine_args.{key} is set through {instead}")
        if self.reasoning_default and not self.reasoning_parser:
            raise ValueError("reasoning_default needs a reasoning_parser")
        if self.rules.reasoning_efforts and not self.reasoning_parser:
            raise ValueError("rules.reasoning_efforts needs a reasoning_parser")
        if self.max_videos_per_prompt and not self.video_input:
            raise ValueError(
                f"max_videos_per_prompt={self.max_videos_per_prompt} but {self.name} takes no "
                "video (video_input: false)"
            )
        if self.hardware.nodes > 1 and (
            not self.hardware.gpus or self.hardware.gpus % self.hardware.nodes
        ):
            raise ValueError(
                f"hardware.nodes={self.hardware.nodes} must divide hardware.gpus="
                f"{self.hardware.gpus} (every node holds the same number of GPUs)"
            )
        if self.hardware.gpus and self.hardware.gpus != self.parallel_size:
            raise ValueError(
                f"hardware.gpus={self.hardware.gpus} but tensor x pipeline parallel size is "
                f"{self.parallel_size}"
            )
        return self

    @property
    def parallel_size(self) -> int:
        args = self.engine_args
        return parallel_size(args)

    @property
    def tag(self) -> str:
        """NIM-style runtime tag, e.g. `vllm-fp8-tp8-pp1`."""
        args = self.engine_args
        device = "" if self.hardware.gpus else "cpu-"
        nodes = f"-{self.hardware.nodes}node" if self.hardware.nodes > 1 else ""
        return (
            f"vllm-{device}{self.hardware.precision}-tp{args.get('tensor_parallel_size', 1)}"
            f"-pp{args.get('pipeline_parallel_size', 1)}{nodes}"
        )

    def content_id(self) -> str:
        content = self.model_dump(mode="json")
        if content["hardware"]["nodes"] == 1:
            del content["hardware"]["nodes"]  # added later: single-node ids stay as they were
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float


@dataclass(frozen=True)
class Fit:
    ok: bool
    reason: str


def fit(profile: Profile, gpus: Sequence[Gpu]) -> Fit:
    """Can this machine run its share of the profile? The answer names what is missing."""
    nodes = profile.hardware.nodes
    need = profile.hardware.gpus // nodes
    on = f" on each of {nodes} nodes" if nodes > 1 else ""
    if need == 0:
        return Fit(True, "runs on CPU")
    if len(gpus) < need:
        return Fit(False, f"needs {need} GPU(s){on}, {len(gpus)} visible")
    per_gpu = profile.hardware.gpu_memory_gib
    small = [g for g in gpus if g.memory_gib < per_gpu]
    if len(gpus) - len(small) < need:
        return Fit(
            False,
            f"needs {need} GPU(s){on} with >= {per_gpu:g} GiB each; "
            f"{len(gpus) - len(small)} of {len(gpus)} have that much",
        )
    return Fit(True, f"uses {need} of {len(gpus)} GPU(s){on}")


class ProfileStore:
    """The profiles known to this installation, resolved, validated and indexed by id."""

    def __init__(self, profiles: Iterable[Profile]) -> None:
        self._by_name = {p.name: p for p in profiles}
        self._ids = {name: p.content_id() for name, p in self._by_name.items()}

    @classmethod
    def load(cls, directories: Sequence[Path]) -> ProfileStore:
        raw: dict[str, dict[str, Any]] = {}
        origin: dict[str, Path] = {}
        for directory in directories:
            if not directory.is_dir():
                raise ConfigError(f"profile directory {directory} does not exist")
            for path in sorted(directory.glob("*.yaml")):
                data = _read_yaml(path)
                name = data.get("name", path.stem)
                if name != path.stem:
                    raise ConfigError(f"{path}: name {name!r} must match the file name")
                if name in raw:
                    raise ConfigError(f"{path}: profile {name!r} is also defined in {origin[name]}")
                raw[name] = data
                origin[name] = path
        profiles = []
        for name in raw:
            data = _resolve_extends(name, raw)
            try:
                profiles.append(Profile.model_validate(data))
            except ValidationError as exc:
                raise ConfigError(_describe(exc, str(origin[name]))) from None
        return cls(profiles)

    def __iter__(self) -> Any:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def id_of(self, profile: Profile) -> str:
        return self._ids[profile.name]

    def get(self, key: str) -> Profile:
        """A profile by name, by full id, or by a unique id prefix of 8 or more hex digits."""
        if key in self._by_name:
            return self._by_name[key]
        key_lower = key.lower()
        if re.fullmatch(r"[0-9a-f]{8,64}", key_lower):
            hits = [n for n, pid in self._ids.items() if pid.startswith(key_lower)]
            if len(hits) == 1:
                return self._by_name[hits[0]]
            if len(hits) > 1:
                raise ConfigError(f"profile id prefix {key!r} matches {', '.join(hits)}")
        raise ConfigError(
            f"invalid NIM_MODEL_PROFILE={key!r}: no such profile; known profiles: "
            f"{', '.join(sorted(self._by_name))}"
        )

    def select(self, requested: str | None, gpus: Sequence[Gpu]) -> Profile:
        """The profile to serve: the one asked for, else the CPU demo when no GPU is visible."""
        if requested:
            return self.get(requested)
        if not gpus:
            return self.get(TINY_PROFILE)
        fitting = [p.name for p in self if p.hardware.gpus and fit(p, gpus).ok]
        raise ConfigError(
            f"NIM_MODEL_PROFILE is not set and {len(gpus)} GPU(s) are visible: choose a profile "
            f"(fitting this machine: {', '.join(fitting) or 'none'}; see `nimctl list-profiles`)"
        )


def parallel_size(engine_args: Mapping[str, Any]) -> int:
    """Tensor x pipeline parallel size: the GPUs (or CPU ranks) one engine spans."""
    tensor = int(engine_args.get("tensor_parallel_size", 1))
    return tensor * int(engine_args.get("pipeline_parallel_size", 1))


def builtin_profiles_dir() -> Path:
    """Profiles shipped with nimctl, package data: a wheel and a checkout read the same files."""
    return Path(__file__).resolve().parent / "builtin"


def load_store(settings: NimSettings) -> ProfileStore:
    dirs = [builtin_profiles_dir()]
    if settings.profiles_path is not None:
        dirs.append(settings.profiles_path.expanduser())
    return ProfileStore.load(dirs)


def apply_settings(profile: Profile, settings: NimSettings) -> Profile:
    """The profile as it will run: `NIM_*` values (and CLI flags) replace the profile's."""
    update: dict[str, Any] = {}
    for field in (
        "served_model_name",
        "max_images_per_prompt",
        "max_videos_per_prompt",
        "tool_call_parser",
    ):
        value = getattr(settings, field)
        if value is not None:
            update[field] = value
    if settings.model_path is not None:
        update["model"] = settings.model_path
    if settings.chat_template is not None:
        update["chat_template"] = str(settings.chat_template.expanduser())

    engine_args = dict(profile.engine_args)
    # Settings that feed a vLLM argument (their `vllm` metadata, which the configuration docs
    # show) and are not profile fields (those are updated above) replace the profile's value.
    for field, arg in engine_arg_settings().items():
        if field in Profile.model_fields:
            continue
        value = getattr(settings, field)
        if value is not None:
            engine_args[arg] = value
    hardware = profile.hardware
    if settings.num_compute_nodes is not None and settings.num_compute_nodes != hardware.nodes:
        hardware = hardware.model_copy(update={"nodes": settings.num_compute_nodes})
        update["hardware"] = hardware
    nodes = hardware.nodes
    if nodes > 1:
        engine_args.setdefault("distributed_executor_backend", "ray")
    if nodes > 1 and engine_args.get("distributed_executor_backend") != "ray":
        raise ConfigError(
            f"{nodes} nodes need vLLM's Ray executor, not "
            f"{engine_args.get('distributed_executor_backend')!r}: unset "
            "NIM_DISTRIBUTED_EXECUTOR_BACKEND or set it to ray"
        )
    if settings.guided_decoding_backend is not None:
        structured = dict(engine_args.get("structured_outputs_config") or {})
        structured["backend"] = settings.guided_decoding_backend
        engine_args["structured_outputs_config"] = structured
    update["engine_args"] = engine_args

    if hardware.gpus:
        parallel = parallel_size(engine_args)
        if parallel != hardware.gpus:
            # Same total memory spread over a different number of GPUs.
            total = hardware.gpus * hardware.gpu_memory_gib
            update["hardware"] = hardware.model_copy(
                update={"gpus": parallel, "gpu_memory_gib": round(total / parallel, 1)}
            )
    try:
        return Profile.model_validate({**profile.model_dump(), **update})
    except ValidationError as exc:
        # Profile and settings together: no one file or variable to name, the problem says.
        lines = describe(exc, key_path, unknown=_UNKNOWN_KEY)
        raise ConfigError(
            f"profile {profile.name} with the given settings: {'; '.join(lines)}"
        ) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a profile must be a YAML mapping")
    return data


def _resolve_extends(name: str, raw: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    chain: list[str] = []
    current: str | None = name
    while current is not None:
        if current in chain:
            raise ConfigError(f"profile {name}: extends forms a cycle: {' -> '.join(chain)}")
        if current not in raw:
            raise ConfigError(f"profile {chain[-1]}: extends unknown profile {current!r}")
        chain.append(current)
        current = raw[current].get("extends")
    merged: dict[str, Any] = {}
    for link in reversed(chain):
        merged = _deep_merge(merged, {k: v for k, v in raw[link].items() if k != "extends"})
    return merged


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(exc: ValidationError, file: str) -> str:
    """One line naming the file and each bad key."""
    lines = describe(
        exc, lambda loc: f"{file} {key_path(loc)}" if loc else file, unknown=_UNKNOWN_KEY
    )
    return "; ".join(f"invalid {line}" for line in lines)
