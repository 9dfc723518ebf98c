from __future__ import annotations

import json
import logging

from nimctl.observability import (
    JsonLineFormatter,
    RequestIdFilter,
    as_json_line,
    key_name,
    logging_config,
    python_level,
    request_id,
)
from nimctl.settings import NimSettings


def record(message: str = "hello %s", args: tuple = ("world",)) -> logging.LogRecord:
    return logging.LogRecord("nimctl.test", logging.WARNING, "/x/y.py", 7, message, args, None)


def test_json_lines_have_nim_keys_and_the_request_id():
    token = request_id.set("req-1")
    try:
        rec = record()
        RequestIdFilter().filter(rec)
    finally:
        request_id.reset(token)
    entry = json.loads(JsonLineFormatter().format(rec))
    assert entry["message"] == "hello world" and entry["level"] == "WARNING"
    assert entry["file_name"] == "y.py" and entry["line_number"] == 7
    assert entry["request_id"] == "req-1" and entry["logger"] == "nimctl.test"


def test_text_lines_tag_the_request():
    rec = record()
    RequestIdFilter().filter(rec)
    assert rec.request_tag == ""
    token = request_id.set("abc")
    try:
        RequestIdFilter().filter(rec)
    finally:
        request_id.reset(token)
    assert rec.request_tag == " [abc]"


def test_lines_carry_the_api_key_name():
    rec = record()
    tokens = (request_id.set("abc"), key_name.set("alice"))
    try:
        RequestIdFilter().filter(rec)
    finally:
        key_name.reset(tokens[1])
        request_id.reset(tokens[0])
    assert rec.request_tag == " [abc key=alice]"
    entry = json.loads(JsonLineFormatter().format(rec))
    assert entry["request_id"] == "abc" and entry["key_name"] == "alice"
    RequestIdFilter().filter(rec)  # outside the request: neither
    assert rec.request_tag == "" and "key_name" not in JsonLineFormatter().format(rec)


def test_stray_output_becomes_json():
    assert json.loads(as_json_line('{"level": "INFO", "message": "x"}')) == {
        "level": "INFO",
        "message": "x",
    }
    wrapped = json.loads(as_json_line("[W1121 utils.cpp:68] Warning: NUMA binding"))
    assert wrapped == {
        "level": "WARNING",
        "logger": "stdio",
        "message": "[W1121 utils.cpp:68] Warning: NUMA binding",
    }
    assert json.loads(as_json_line("Traceback (most recent call last):"))["level"] == "ERROR"
    assert json.loads(as_json_line("{not json"))["message"] == "{not json"


def test_levels_and_config():
    assert python_level("DEFAULT") == "INFO" and python_level("TRACE") == "DEBUG"
    config = logging_config(NimSettings(jsonl_logging=True, log_level="trace"), ("vllm",))
    assert config["loggers"]["vllm"]["level"] == "DEBUG"
    assert config["formatters"]["nim"]["()"].endswith("JsonLineFormatter")
    assert config["disable_existing_loggers"] is False
