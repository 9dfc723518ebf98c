from __future__ import annotations

import ast
from pathlib import Path

import pytest

import nimctl.settings
from nimctl.errors import ConfigError
from nimctl.settings import NimSettings, load_settings, unknown_nim_variables


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("NIM_"):
            monkeypatch.delenv(key)


def test_defaults_follow_nim():
    s = load_settings()
    assert s.server_port == 8000
    assert s.host == "0.0.0.0"
    assert s.disable_log_requests is True
    assert s.jsonl_logging is False
    # Unset means "the profile decides".
    assert s.max_images_per_prompt is None and s.max_model_len is None


def test_request_timeouts_default_and_are_read(monkeypatch):
    s = load_settings()
    assert (s.request_header_timeout, s.request_body_timeout) == (20.0, 30.0)
    monkeypatch.setenv("NIM_REQUEST_BODY_TIMEOUT", "2.5")
    monkeypatch.setenv("NIM_REQUEST_HEADER_TIMEOUT", "7")
    s = load_settings()
    assert (s.request_header_timeout, s.request_body_timeout) == (7.0, 2.5)


def test_environment_is_read(monkeypatch):
    monkeypatch.setenv("NIM_SERVER_PORT", "9001")
    monkeypatch.setenv("NIM_MAX_IMAGES_PER_PROMPT", "3")
    monkeypatch.setenv("NIM_JSONL_LOGGING", "1")
    monkeypatch.setenv("NIM_ENABLE_KV_CACHE_REUSE", "true")
    monkeypatch.setenv("NIM_LOG_LEVEL", "warning")
    s = load_settings()
    assert (s.server_port, s.max_images_per_prompt) == (9001, 3)
    assert s.jsonl_logging is True and s.enable_kv_cache_reuse is True
    assert s.log_level == "WARNING"


def test_cli_beats_environment(monkeypatch):
    monkeypatch.setenv("NIM_SERVER_PORT", "9001")
    monkeypatch.setenv("NIM_MODEL_PROFILE", "from-env")
    s = load_settings(server_port=9002, model_profile="from-cli", host=None)
    assert s.server_port == 9002
    assert s.model_profile == "from-cli"
    assert s.host == "0.0.0.0"  # None means "flag not given"


def test_empty_variable_counts_as_unset(monkeypatch):
    monkeypatch.setenv("NIM_MAX_MODEL_LEN", "")
    assert load_settings().max_model_len is None


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("NIM_SERVER_PORT", "eighty", "valid integer"),
        ("NIM_SERVER_PORT", "70000", "less than or equal to 65535"),
        ("NIM_MAX_IMAGES_PER_PROMPT", "-1", "greater than or equal to 0"),
        ("NIM_LOG_LEVEL", "LOUD", "'DEFAULT', 'TRACE', 'DEBUG'"),
        ("NIM_GUIDED_DECODING_BACKEND", "regex", "'xgrammar'"),
        ("NIM_KVCACHE_PERCENT", "1.5", "less than or equal to 1"),
        ("NIM_JSONL_LOGGING", "maybe", "valid boolean"),
        ("NIM_CHAT_TEMPLATE", "/no/such/template.jinja", "no file at"),
        ("NIM_REQUEST_BODY_TIMEOUT", "0", "greater than 0"),
        ("NIM_REQUEST_BODY_TIMEOUT", "soon", "valid number"),
        ("NIM_REQUEST_HEADER_TIMEOUT", "-5", "greater than 0"),
    ],
)
def test_invalid_value_is_one_line_naming_variable(monkeypatch, var, value, expected):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message
    assert f"{var}={value!r}" in message
    assert expected in message


@pytest.mark.parametrize(
    "var", ["NIM_MAX_LORA_RANK", "NIM_MAX_LORAS", "NIM_MAX_CPU_LORAS", "NIM_PEFT_REFRESH_INTERVAL"]
)
def test_lora_settings_need_a_peft_source(monkeypatch, tmp_path, var):
    monkeypatch.setenv(var, "8")
    with pytest.raises(ConfigError, match=f"{var} applies only to LoRA.*NIM_PEFT_SOURCE"):
        load_settings()
    monkeypatch.setenv("NIM_PEFT_SOURCE", str(tmp_path))
    assert load_settings().peft_source == tmp_path


def test_invalid_cli_value_names_the_flag():
    with pytest.raises(ConfigError, match=r"--server-port=0"):
        load_settings(server_port=0)


def test_chat_template_must_exist(tmp_path: Path, monkeypatch):
    template = tmp_path / "t.jinja"
    template.write_text("{{ messages }}")
    monkeypatch.setenv("NIM_CHAT_TEMPLATE", str(template))
    assert load_settings().chat_template == template


def test_unknown_nim_variables_are_reported():
    env = {"NIM_MAX_IMAGE_PER_PROMPT": "3", "NIM_SERVER_PORT": "1", "PATH": "/bin"}
    assert unknown_nim_variables(env) == ["NIM_MAX_IMAGE_PER_PROMPT"]


def test_every_setting_is_documented():
    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    missing = [
        f"NIM_{n.upper()}" for n in NimSettings.model_fields if f"NIM_{n.upper()}" not in doc
    ]
    assert missing == []


def test_configuration_doc_is_generated_from_the_settings():
    from nimctl.settings import settings_tables

    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    block = doc.split("<!-- settings:begin", 1)[1].split("<!-- settings:end -->", 1)[0]
    assert block.split("\n", 1)[1].strip() == settings_tables().strip(), (
        "docs/configuration.md is stale: run `nimctl config-doc --write docs/configuration.md`"
    )


def test_tls_settings_need_their_files(tmp_path, monkeypatch):
    key, cert, ca = (tmp_path / n for n in ("k.pem", "c.pem", "ca.pem"))
    for path in (key, cert, ca):
        path.write_text("x")
    monkeypatch.setenv("NIM_SSL_MODE", "tls")
    with pytest.raises(
        ConfigError, match="NIM_SSL_MODE=TLS needs NIM_SSL_KEY_PATH and NIM_SSL_CERT_PATH"
    ):
        load_settings()
    monkeypatch.setenv("NIM_SSL_KEY_PATH", str(key))
    monkeypatch.setenv("NIM_SSL_CERT_PATH", str(cert))
    assert load_settings().ssl_mode == "TLS"
    monkeypatch.setenv("NIM_SSL_MODE", "MTLS")
    with pytest.raises(ConfigError, match="needs NIM_SSL_CA_CERTS_PATH"):
        load_settings()
    monkeypatch.setenv("NIM_SSL_CA_CERTS_PATH", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="NIM_SSL_CA_CERTS_PATH=.*no file at"):
        load_settings()
    monkeypatch.setenv("NIM_SSL_CA_CERTS_PATH", str(ca))
    assert load_settings().ssl_mode == "MTLS"


def test_api_key_is_never_echoed(monkeypatch):
    monkeypatch.setenv("NIM_API_KEY", "")
    assert load_settings().api_key is None
    monkeypatch.setenv("NIM_API_KEY", "top-secret")
    settings = load_settings()
    assert settings.api_key.get_secret_value() == "top-secret"
    assert "top-secret" not in repr(settings)


def test_several_named_keys_and_a_key_file(monkeypatch, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# team keys\nci:k-ci\n\nk-plain\n")
    monkeypatch.setenv("NIM_API_KEY", "alice:k-alice,k-2")
    monkeypatch.setenv("NIM_API_KEY_FILE", str(keys))
    assert load_settings().api_key_file == keys


@pytest.mark.parametrize(
    ("env", "file", "message"),
    [
        ({"NIM_API_KEY": "a:s3cret-one,a:s3cret-two"}, None, "name 'a' is used twice"),
        ({"NIM_API_KEY": "bad/name:s3cret-one"}, None, "key 1: the key name"),
        ({"NIM_API_KEY": "a:s3cret-one"}, "a:s3cret-two\n", "name 'a' is used twice"),
        ({}, "# none yet\n", "no keys in the file"),
        ({}, "ok:s3cret-one\nwith space s3cret-two\n", "line 2: the key has a character"),
    ],
)
def test_bad_keys_stop_with_one_line_that_shows_no_key(monkeypatch, tmp_path, env, file, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if file is not None:
        (tmp_path / "keys").write_text(file)
        monkeypatch.setenv("NIM_API_KEY_FILE", str(tmp_path / "keys"))
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings()
    text = str(caught.value)
    assert "\n" not in text and "s3cret" not in text
    assert ("NIM_API_KEY_FILE" if file else "NIM_API_KEY") in text


def test_a_pod_key_file_is_not_looked_for_here():
    from nimctl.settings import settings_for_pod

    pod = settings_for_pod({"NIM_API_KEY_FILE": "/var/run/secrets/nimctl/keys"})
    assert str(pod.api_key_file) == "/var/run/secrets/nimctl/keys"


def test_cors_is_off_by_default_and_parsed_when_on(monkeypatch):
    assert load_settings().cors is None
    monkeypatch.setenv("NIM_CORS_ALLOW_ORIGINS", " https://app.example.com, http://localhost:3000 ")
    monkeypatch.setenv("NIM_CORS_ALLOW_METHODS", "get,post")
    monkeypatch.setenv("NIM_CORS_MAX_AGE", "60")
    cors = load_settings().cors
    assert cors is not None
    assert cors.allow_origins == ["https://app.example.com", "http://localhost:3000"]
    assert cors.allow_methods == ["GET", "POST"]
    assert cors.allow_headers == ["*"] and cors.expose_headers == ["X-Request-Id"]
    assert cors.max_age == 60


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("NIM_CORS_ALLOW_ORIGINS", "https://app.example.com/", "is not an origin"),
        ("NIM_CORS_ALLOW_ORIGINS", "app.example.com", "is not an origin"),
        ("NIM_CORS_ALLOW_ORIGINS", "*,https://a.example", "give '\\*' alone"),
        ("NIM_CORS_ALLOW_METHODS", "GET,PSOT", "'PSOT' is not one of"),
        ("NIM_CORS_ALLOW_HEADERS", "Authorization,Content Type", "'Content Type' is not a header"),
        ("NIM_CORS_EXPOSE_HEADERS", "X-Request-Id;", "is not a header name"),
        ("NIM_CORS_MAX_AGE", "-1", "greater than or equal to 0"),
    ],
)
def test_bad_cors_settings_stop_with_one_line(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings()
    assert str(caught.value).startswith(f"invalid {name}=") and "\n" not in str(caught.value)


# Leaf modules: each parses one kind of value and imports nothing of nimctl but errors.
SETTINGS_MAY_IMPORT = {
    "nimctl.allowlist",
    "nimctl.cors",
    "nimctl.errors",
    "nimctl.keys",
    "nimctl.validation_errors",
}


def nimctl_imports(path: str) -> set[str]:
    tree = ast.parse(Path(path).read_text())
    return {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nimctl")
    }


def test_settings_sit_below_every_module_that_reads_them():
    """Nearly every module reads the settings, so the settings may lean only on leaf parsers:
    importing a package that reads settings back (media/ did, for the allowlist) turns the
    layers into a circle."""
    assert nimctl_imports(nimctl.settings.__file__) <= SETTINGS_MAY_IMPORT
    for leaf in SETTINGS_MAY_IMPORT - {"nimctl.errors"}:
        path = Path(nimctl.settings.__file__).with_name(leaf.split(".")[1] + ".py")
        assert nimctl_imports(str(path)) <= {"nimctl.errors"}, leaf
