"""Tracing set-up at the CLI edge: nothing at all when off; vLLM's exporter told the protocol."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from nimctl.api import create_app
from nimctl.api.middleware import TracingMiddleware
from nimctl.profiles import ProfileStore, builtin_profiles_dir
from nimctl.settings import NimSettings
from nimctl.tracing import tracing_from_settings
from tests.support.fake_engine import FakeEngine


def test_off_by_default_and_the_environment_untouched():
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert tracing_from_settings(NimSettings(), environ) is None
    assert environ == {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}


def test_on_it_tells_vllms_exporter_the_protocol_and_the_service_name():
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    tracing = tracing_from_settings(NimSettings(enable_otel=True), environ)
    assert tracing is not None
    try:
        # vLLM's exporter is grpc unless told; nimctl's default is http/protobuf.
        assert environ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] == "http/protobuf"
        assert environ["OTEL_SERVICE_NAME"] == "nimctl"
        assert tracing.provider.resource.attributes["service.name"] == "nimctl"
    finally:
        tracing.shutdown()
    environ = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_SERVICE_NAME": "vlm-a"}
    tracing = tracing_from_settings(NimSettings(enable_otel=True), environ)
    assert tracing is not None
    tracing.shutdown()
    assert environ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] == "grpc"
    assert environ["OTEL_SERVICE_NAME"] == "vlm-a"


def test_an_app_without_tracing_has_no_tracing_middleware():
    profile = ProfileStore.load([builtin_profiles_dir()]).get("tiny")
    app = create_app(NimSettings(), profile, FakeEngine(), registry=CollectorRegistry())
    assert TracingMiddleware not in [m.cls for m in app.user_middleware]
    assert app.state.nimctl.tracing is None
