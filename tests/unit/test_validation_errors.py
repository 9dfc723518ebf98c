"""One style for pydantic's errors (nimctl.validation_errors): a bad value reads alike whether it
came from a CLI flag, a `NIM_*` variable, a values file or a profile; a bad request names the
path in the body as the guards do."""

from __future__ import annotations

import os
from typing import Any, Literal

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, ValidationError

from nimctl.api.errors import install_error_handlers
from nimctl.errors import ConfigError
from nimctl.k8s import load_values, merge_values, render_manifests
from nimctl.profiles import ProfileStore, builtin_profiles_dir
from nimctl.settings import load_settings, settings_for_pod
from nimctl.validation_errors import describe, json_path, key_path, request_error


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("NIM_"):
            monkeypatch.delenv(key)


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    flag: bool
    amount: str | int


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[Inner]
    mode: Literal["a", "b"] = "a"
    secret: str = ""


def errors_of(data: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Outer.model_validate(data, strict=True)
    return caught.value


def test_key_paths_read_as_the_guards_name_parts():
    assert (
        key_path(("messages", 0, "content", 1, "image_url")) == "messages[0].content[1].image_url"
    )
    assert key_path(("env", "NIM_SERVER_PORT")) == "env.NIM_SERVER_PORT"
    assert key_path(()) == ""


def test_each_problem_names_its_place_and_value():
    exc = errors_of({"items": [{"flag": "yes", "amount": 1}], "mode": "c", "extra": 1})
    lines = describe(exc, lambda loc: f"file {key_path(loc)}" if loc else "file")
    assert lines == [
        "file items[0].flag='yes': Input should be a valid boolean",
        "file mode='c': Input should be 'a' or 'b'",
        "file extra: unknown key",  # no value: the key is what is wrong
    ]


def test_a_union_is_one_problem_and_a_missing_key_has_no_value():
    exc = errors_of({"items": [{"flag": True, "amount": 1.5}, {"amount": "x"}]})
    lines = describe(exc, key_path, unknown="unknown key (see the docs)")
    assert lines == [
        "items[0].amount=1.5: should be a string or integer",
        "items[1].flag: missing",
    ]


def test_secrets_are_not_shown_and_the_whole_has_its_own_name():
    exc = errors_of({"items": [], "secret": 5})
    assert describe(
        exc, lambda loc: key_path(loc) or "x", secret=lambda loc: loc == ("secret",)
    ) == ["secret='***': Input should be a valid string"]

    class Rule(BaseModel):
        a: int = 0

        def model_post_init(self, _: Any) -> None:
            if self.a:
                raise ValueError("a needs b")

    with pytest.raises(ValidationError) as caught:
        Rule(a=1)
    assert describe(caught.value, lambda loc: key_path(loc) or "settings") == [
        "settings: a needs b"
    ]
    assert describe(caught.value, key_path) == ["a needs b"]


# --- one bad value, every source -------------------------------------------------------------


def k8s_error(env: dict[str, Any]) -> str:
    store = ProfileStore.load([builtin_profiles_dir()])
    profile = store.get("tiny")
    values = merge_values(load_values(None), {"env": env})
    with pytest.raises(ConfigError) as caught:
        render_manifests(profile, store.id_of(profile), values)
    return str(caught.value)


def config_error(make: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        make()
    return str(caught.value)


def test_a_bad_port_reads_alike_from_a_flag_a_variable_and_a_values_file(monkeypatch):
    message = "70000': Input should be less than or equal to 65535"
    flag = config_error(lambda: load_settings(server_port=70000))
    assert flag == "invalid --server-port=70000: Input should be less than or equal to 65535"
    monkeypatch.setenv("NIM_SERVER_PORT", "70000")
    assert config_error(load_settings) == f"invalid NIM_SERVER_PORT='{message}"
    monkeypatch.delenv("NIM_SERVER_PORT")
    pod = f"invalid values env.NIM_SERVER_PORT='{message}"
    assert config_error(lambda: settings_for_pod({"NIM_SERVER_PORT": "70000"})) == pod
    # nimctl k8s reads the port from the pod's settings: the same line, not one of its own.
    assert k8s_error({"NIM_SERVER_PORT": 70000}) == pod


def test_a_bad_profile_file_names_the_file_and_the_key(tmp_path):
    (tmp_path / "bad.yaml").write_text(
        "name: bad\nmodel: m\nserved_model_name: s\nshm_size: lots\nmax_images_per_prompt: 1\n"
        "max_image: 2\n"
    )
    message = config_error(lambda: ProfileStore.load([tmp_path]))
    file = tmp_path / "bad.yaml"
    assert message.startswith(f"invalid {file} shm_size='lots': String should match pattern")
    assert f"; invalid {file} max_image: unknown key (docs/profiles.md lists the keys)" in message
    assert "\n" not in message


def test_a_bad_values_key_reads_like_a_bad_values_env_entry():
    store = ProfileStore.load([builtin_profiles_dir()])
    profile = store.get("tiny")
    values = merge_values(load_values(None), {"replicaCount": "2", "extraEnv": [1]})
    with pytest.raises(ConfigError) as caught:
        render_manifests(profile, store.id_of(profile), values)
    assert str(caught.value) == (
        "invalid values replicaCount='2': Input should be a valid integer; "
        "invalid values extraEnv[0]=1: Input should be a valid dictionary"
    )


# --- requests ------------------------------------------------------------------------------------


def test_a_request_problem_is_a_400_naming_the_path_in_the_body():
    payload = {"items": [{"flag": True, "amount": 1}, {"flag": 1, "amount": 1}]}
    error = request_error(errors_of(payload).errors(), payload)
    assert error.status == 400 and error.param == "items[1].flag"
    assert error.message == "Invalid request: items[1].flag must be true or false, not 1."
    missing = {"items": [{"flag": True}]}
    error = request_error(errors_of(missing).errors(), missing)
    assert error.param == "items[0].amount"
    assert error.message == "Invalid request: items[0].amount: Field required"
    assert json_path(("items", 0, "Inner", "flag"), payload) == ("items", 0, "flag")


@pytest.fixture
def framework_app() -> FastAPI:
    """A route with typed parameters: FastAPI validates them, nimctl's handler answers."""
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/typed")
    async def typed(body: Outer, n: int = 1) -> dict[str, int]:
        return {"n": n}

    return app


async def post(app: FastAPI, path: str, body: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post(path, json=body)


@pytest.mark.parametrize(
    ("path", "body", "param", "message"),
    [
        (
            "/typed",
            {"items": [{"flag": True, "amount": 1}, {"flag": True, "amount": []}]},
            "items[1].amount",
            "Invalid request: items[1].amount: Input should be a valid string",
        ),
        ("/typed?n=x", {"items": []}, "n", 'Invalid request: n must be an integer, not "x".'),
        ("/typed", {}, "items", "Invalid request: items: Field required"),
    ],
)
async def test_framework_validation_reads_as_the_request_paths_own(
    framework_app, path, body, param, message
):
    response = await post(framework_app, path, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param
    assert error["message"].startswith(message)
    assert error["type"] == "BadRequestError" and error["code"] == 400
