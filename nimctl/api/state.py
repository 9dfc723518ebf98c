"""What the routes share, held once on `app.state` instead of in module globals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from starlette.requests import Request

from nimctl.admission import Admission
from nimctl.api.middleware import Inflight
from nimctl.engine.base import Engine
from nimctl.errors import NotFoundError, ServiceUnavailableError
from nimctl.lifecycle import State, Supervisor
from nimctl.media.intake import MediaIntake
from nimctl.metrics import MetricsExporter, NimctlMetrics
from nimctl.profiles import Profile
from nimctl.settings import NimSettings
from nimctl.tracing import Tracing


@dataclass(frozen=True)
class AppState:
    settings: NimSettings
    profile: Profile
    profile_id: str
    engine: Engine[Any]
    supervisor: Supervisor
    intake: MediaIntake
    metrics: NimctlMetrics
    exporter: MetricsExporter
    inflight: Inflight
    admission: Admission | None  # None: no NIM_MAX_QUEUED_* limit, nothing counted
    tracing: Tracing | None = None  # None: NIM_ENABLE_OTEL off, no spans


def app_state(request: Request) -> AppState:
    return cast(AppState, request.app.state.nimctl)  # Starlette's app.state is untyped


def require_ready(state: AppState) -> None:
    """Model routes answer 503 until the engine is up, as they would behind NIM's proxy."""
    if state.supervisor.state is not State.READY:
        raise ServiceUnavailableError(f"Service is not ready: {state.supervisor.reason}.")


def require_model(state: AppState, payload: dict[str, Any]) -> str:
    """The model a request is for: the served model or a loaded LoRA adapter.

    A request for another model is answered as such first, whatever else is wrong with it, as
    vLLM does. A missing or non-string `model` means the served model here and is left to the
    request's own validation.
    """
    base = state.engine.served_model_name
    model = payload.get("model")
    if not isinstance(model, str) or model == base:
        return base
    adapters = state.engine.adapters
    if model not in adapters:
        also = f" and {len(adapters)} LoRA adapter(s), see /v1/models" if adapters else ""
        raise NotFoundError(
            f"The model `{model}` does not exist. Valid models: {base}{also}.", param="model"
        )
    return model
