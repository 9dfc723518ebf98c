"""NIM's metadata routes: version, metadata, licence, manifest."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from nimctl import API_VERSION, __version__
from nimctl.api.state import AppState, app_state
from nimctl.errors import NotFoundError
from nimctl.profiles import BUILTIN_SCHEME

router = APIRouter(tags=["metadata"])

_LICENSE_NAMES = (
    "LICENSE",
    "LICENSE.txt",
    "LICENSE.md",
    "LICENCE",
    "LICENCE.txt",
    "license.txt",
    "license.md",
)


@router.get("/v1/version")
async def version() -> JSONResponse:
    return JSONResponse({"release": __version__, "api": API_VERSION})


@router.get("/v1/metadata")
async def metadata(request: Request) -> JSONResponse:
    state = app_state(request)
    profile = state.profile
    body: dict[str, Any] = {
        "version": __version__,
        "assetInfo": [profile.model],
        "licenseInfo": {"name": profile.license, "path": _license_name(state)},
        "modelInfo": [
            {
                "shortName": profile.served_model_name,
                "modelUrl": _model_url(profile.model),
                "profile": profile.name,
                "maxModelLen": state.engine.max_model_len or None,
            }
        ],
        "repository_override": "",
        "selectedModelProfileId": state.profile_id,
    }
    return JSONResponse(body)


@router.get("/v1/license")
async def license_file(request: Request) -> JSONResponse:
    state = app_state(request)
    path = _license_path(state)
    if path is None:
        stated = f" The profile states: {state.profile.license}." if state.profile.license else ""
        raise NotFoundError(f"The served model has no licence file.{stated}")
    content = path.read_text(encoding="utf-8", errors="replace")
    return JSONResponse(
        {
            "name": path.name,
            "path": path.name,
            "sha": hashlib.sha1(content.encode()).hexdigest(),
            "size": len(content),
            "url": _model_url(state.profile.model),
            "type": "file",
            "content": content,
        }
    )


@router.get("/v1/manifest")
async def manifest(request: Request) -> JSONResponse:
    state = app_state(request)
    text = f"# id: {state.profile_id}\n{state.profile.to_yaml()}"
    return JSONResponse({"manifest_file": text, "repository_override": ""})


def _license_path(state: AppState) -> Path | None:
    directory = state.engine.model_path
    if directory is None:
        return None
    for name in _LICENSE_NAMES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _license_name(state: AppState) -> str | None:
    path = _license_path(state)
    return path.name if path else None


def _model_url(source: str) -> str:
    if source.startswith(BUILTIN_SCHEME) or source.startswith(("/", ".")):
        return source
    return f"https://huggingface.co/{source}"
