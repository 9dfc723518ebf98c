"""What the routes share, held once on `app.state` instead of in module globals."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from starlette.requests import Request

from nimctl.engine.base import Engine
from nimctl.lifecycle import Supervisor
from nimctl.profiles import Profile
from nimctl.settings import NimSettings


@dataclass(frozen=True)
class AppState:
    settings: NimSettings
    profile: Profile
    profile_id: str
    engine: Engine
    supervisor: Supervisor
    registry: CollectorRegistry


def app_state(request: Request) -> AppState:
    return request.app.state.nimctl
