"""API keys (several, named, from a file that rotates) and CORS, in-process."""

from __future__ import annotations

import asyncio
import logging
import os
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nimctl.observability import RequestIdFilter
from tests.support.errors import assert_error_shape

MODEL = "nimctl/tiny-vlm"
HI = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
ORIGIN = "https://app.example.com"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def by_key(text: str, route: str) -> dict[str, float]:
    return {
        s.labels["key"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "nimctl_http_requests_total" and s.labels["route"] == route
    }


async def test_several_keys_each_accepted_and_named_in_the_metric(make_harness):
    async with make_harness(api_key="alice:k-alice, bob:k-bob ,k-anon") as h:
        await h.make_ready()
        for key, times in (("k-alice", 2), ("k-bob", 1), ("k-anon", 1)):
            for _ in range(times):
                response = await h.client.get("/v1/models", headers=bearer(key))
                assert response.status_code == 200, key
        # The scheme is case-insensitive (RFC 9110); a key with its name is no key.
        lower = await h.client.get("/v1/models", headers={"Authorization": "bearer k-bob"})
        assert lower.status_code == 200
        for wrong in ("alice:k-alice", "K-ALICE", "k-alic", ""):
            refused = await h.client.get("/v1/models", headers=bearer(wrong))
            assert refused.status_code == 401, repr(wrong)
        counts = by_key((await h.client.get("/v1/metrics")).text, "/v1/models")
        assert counts == {"alice": 2, "bob": 2, "": 1}
        refused_total = sum(
            s.value
            for f in text_string_to_metric_families((await h.client.get("/metrics")).text)
            for s in f.samples
            if s.name == "nimctl_http_requests_total" and s.labels["status"] == "401"
        )
        assert refused_total == 4


async def test_the_key_name_labels_log_lines_never_the_key(make_harness):
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Keep()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(request_tag)s %(message)s"))
    log = logging.getLogger("nimctl.test.access")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        async with make_harness(api_key="alice:k-alice,k-anon") as h:

            async def logs() -> dict[str, str]:
                log.info("serving")
                return {}

            h.app.add_api_route("/v1/test-log", logs)
            headers = {**bearer("k-alice"), "X-Request-Id": "r1"}
            assert (await h.client.get("/v1/test-log", headers=headers)).status_code == 200
            headers = {**bearer("k-anon"), "X-Request-Id": "r2"}
            assert (await h.client.get("/v1/test-log", headers=headers)).status_code == 200
    finally:
        log.removeHandler(handler)
    assert lines == [" [r1 key=alice] serving", " [r2] serving"]


async def test_a_rotated_key_file_is_used_without_a_restart(make_harness, tmp_path):
    path = tmp_path / "keys"

    def swap(text: str) -> None:  # as a Secret volume does: a new file, renamed into place
        (tmp_path / "keys.new").write_text(text)
        os.replace(tmp_path / "keys.new", path)

    swap("# current\nold:k-old\n")
    async with make_harness(api_key="env:k-env", api_key_file=path) as h:
        await h.make_ready()
        assert (await h.client.get("/v1/models", headers=bearer("k-old"))).status_code == 200
        swap("new:k-new\n")

        async def status(key: str) -> int:
            return (await h.client.get("/v1/models", headers=bearer(key))).status_code

        deadline = time.monotonic() + 30
        while await status("k-new") != 200:
            assert time.monotonic() < deadline, "the new key was never accepted"
            await asyncio.sleep(0.05)
        assert await status("k-old") == 401
        assert await status("k-env") == 200  # NIM_API_KEY's keys stay
        counts = by_key((await h.client.get("/v1/metrics")).text, "/v1/models")
        assert counts["new"] == 1 and counts["old"] == 1 and counts["env"] == 1


async def test_every_key_is_compared_whichever_matches(make_harness, monkeypatch):
    """No early exit: the first key, the last one and none cost the same comparisons."""
    import hmac

    from nimctl import keys as keys_module

    compared: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(len(a) + len(b))
        return real(a, b)

    monkeypatch.setattr(keys_module.hmac, "compare_digest", counting)
    async with make_harness(api_key="a:k-first,b:k-second-longer,c:k3") as h:
        for key in ("k-first", "k3", "nope", "a-much-longer-wrong-key-than-any"):
            compared.clear()
            await h.client.get("/v1/models", headers=bearer(key))
            assert compared == [64, 64, 64], key  # three digests of 32 bytes each side


async def test_open_paths_stay_open_with_a_key_file(make_harness, tmp_path):
    (tmp_path / "keys").write_text("k\n")
    async with make_harness(api_key_file=tmp_path / "keys") as h:
        await h.make_ready()
        for path in ("/v1/health/live", "/v1/health/ready", "/v1/metrics", "/metrics"):
            assert (await h.client.get(path)).status_code == 200, path
        assert (await h.client.get("/v1/models")).status_code == 401


async def test_cors_preflight_needs_no_key_and_errors_carry_cors_headers(make_harness):
    async with make_harness(api_key="k", cors_allow_origins=ORIGIN) as h:
        await h.make_ready()
        preflight = await h.client.options(
            "/v1/chat/completions",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in preflight.headers["access-control-allow-methods"]
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed
        assert preflight.headers["access-control-max-age"] == "600"

        refused = await h.client.post("/v1/chat/completions", json=HI, headers={"Origin": ORIGIN})
        assert refused.status_code == 401
        assert_error_shape(refused.json(), 401)
        assert refused.headers["access-control-allow-origin"] == ORIGIN
        assert "x-request-id" in refused.headers["access-control-expose-headers"].lower()

        ok = await h.client.post(
            "/v1/chat/completions", json=HI, headers={"Origin": ORIGIN, **bearer("k")}
        )
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == ORIGIN
        assert "x-request-id" in ok.headers["access-control-expose-headers"].lower()
        assert ok.headers["x-request-id"]

        # An OPTIONS that is no preflight is an ordinary request: the key is needed.
        plain = await h.client.options("/v1/models", headers={"Origin": ORIGIN})
        assert plain.status_code == 401
        # Another origin gets no CORS grant.
        other = await h.client.options(
            "/v1/models",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("api_key", [None, "k"])
async def test_cors_off_sends_no_cors_headers(make_harness, api_key):
    async with make_harness(api_key=api_key) as h:
        await h.make_ready()
        headers = {"Origin": ORIGIN, **(bearer("k") if api_key else {})}
        response = await h.client.get("/v1/models", headers=headers)
        assert response.status_code == 200
        assert not [k for k in response.headers if k.startswith("access-control-")]
        preflight = await h.client.options(
            "/v1/models", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
        )
        assert preflight.status_code in (401, 405)
        assert not [k for k in preflight.headers if k.startswith("access-control-")]
        assert "CORSMiddleware" not in [m.cls.__name__ for m in h.app.user_middleware]
