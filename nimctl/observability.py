"""One logging set-up for nimctl, uvicorn and vLLM (in every one of its processes).

- Format: NIM's readable lines (`INFO 2026-03-03 12:00:10.079 start_server.py:42] message`), or
  with `NIM_JSONL_LOGGING=1` one JSON object per line with NIM's keys.
- vLLM configures its loggers itself when it is imported, in this process and in each engine
  process it spawns; it is handed the same configuration through `VLLM_LOGGING_CONFIG_PATH`.
- The request id of the request being served is on every line logged while serving it, and the
  name of the API key it came with, when that key has one (never the key).
- In JSON mode, output that does not come through logging at all (C++ warnings from torch,
  progress bars, stray prints, from any process) is wrapped into JSON lines as well: the
  process's stdout and stderr go through a relay thread, so every line a log shipper reads parses.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import json
import logging
import logging.config
import os
import sys
import tempfile
import threading
from typing import Any, TextIO

from nimctl.settings import NimSettings

TEXT_FORMAT = (
    "%(levelname)s %(asctime)s.%(msecs)03d %(filename)s:%(lineno)d]%(request_tag)s %(message)s"
)
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
OWNED_LOGGERS = ("nimctl", "uvicorn", "uvicorn.error", "uvicorn.access")

# The id of the request the current task serves (set by the request-id middleware).
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "nimctl_request_id", default=None
)
# The name of the API key the current request came with (set by the API-key middleware).
key_name: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "nimctl_key_name", default=None
)


def python_level(nim_level: str) -> str:
    """NIM's levels on Python's: DEFAULT is INFO, TRACE is DEBUG (vLLM's included)."""
    return {"DEFAULT": "INFO", "TRACE": "DEBUG"}.get(nim_level, nim_level)


class RequestIdFilter(logging.Filter):
    """Puts the current request's id and key name on the record (both formats read them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id.get()
        name = key_name.get()
        record.request_id = rid
        record.key_name = name
        tag = " ".join(part for part in (rid, f"key={name}" if name else None) if part)
        record.request_tag = f" [{tag}]" if tag else ""
        return True


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record, with the keys NIM's JSONL logs use."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "level": record.levelname,
            "time": self.formatTime(record, DATE_FORMAT) + f".{int(record.msecs):03d}",
            "file_name": record.filename,
            "file_path": record.pathname,
            "line_number": record.lineno,
            "logger": record.name,
            "message": record.getMessage(),
        }
        process = getattr(record, "vllm_process_name", None)
        if process:
            entry["process"] = process
        rid = getattr(record, "request_id", None)
        if rid:
            entry["request_id"] = rid
        name = getattr(record, "key_name", None)
        if name:
            entry["key_name"] = name
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def logging_config(settings: NimSettings, loggers: tuple[str, ...]) -> dict[str, Any]:
    level = python_level(settings.log_level)
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonLineFormatter"}
        if settings.jsonl_logging
        else {"format": TEXT_FORMAT, "datefmt": DATE_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": f"{__name__}.RequestIdFilter"}},
        "formatters": {"nim": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "nim",
                "filters": ["request_id"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            name: {"handlers": ["stderr"], "level": level, "propagate": False} for name in loggers
        },
        # Libraries' own loggers (httpx, transformers, warnings, ...) reach the root.
        "root": {"handlers": ["stderr"], "level": "WARNING" if level != "DEBUG" else level},
    }


def configure_logging(settings: NimSettings) -> None:
    level = python_level(settings.log_level)
    if settings.jsonl_logging:
        _relay_stdio_as_json()
        os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars are not log lines
    logging.config.dictConfig(logging_config(settings, OWNED_LOGGERS))
    logging.captureWarnings(True)
    # vLLM's processes configure their loggers from this file when they import vllm.
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "1")
    os.environ.setdefault("VLLM_LOGGING_CONFIG_PATH", _write_vllm_config(settings))
    os.environ.setdefault("VLLM_LOGGING_LEVEL", level)
    if level != "DEBUG":
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _write_vllm_config(settings: NimSettings) -> str:
    config = logging_config(settings, ("vllm",))
    del config["root"]  # the root belongs to whoever configured it first
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (kept until the process exits)
        "w", prefix="nimctl-vllm-logging-", suffix=".json", delete=False
    )
    with handle:
        json.dump(config, handle)
    atexit.register(_remove, handle.name)
    return handle.name


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _relay_stdio_as_json() -> None:
    """Point fds 1 and 2 (inherited by vLLM's processes) at a pipe; a thread copies each line
    to the real stderr, wrapping any that is not already a JSON object."""
    read_end, write_end = os.pipe()
    target = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    thread = threading.Thread(
        target=_relay, args=(read_end, target), name="nimctl-stdio-relay", daemon=True
    )
    thread.start()

    def finish() -> None:
        # Closing our write ends lets the relay drain and see EOF (children may still hold
        # theirs; do not wait for them long).
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
        thread.join(timeout=1.0)

    atexit.register(finish)


def _relay(read_end: int, target: TextIO) -> None:
    with os.fdopen(read_end, "r", encoding="utf-8", errors="replace") as source:
        for line in source:
            target.write(as_json_line(line.rstrip("\r\n")) + "\n")


def as_json_line(line: str) -> str:
    """A log line as JSON: unchanged if it is a JSON object already, else wrapped."""
    stripped = line.strip()
    if stripped.startswith("{") and stripped.endswith("}"):
        try:
            json.loads(stripped)
            return stripped
        except ValueError:
            pass
    level = "INFO"
    head = stripped[:40].lower()
    if stripped.startswith("[W") or "warning" in head:
        level = "WARNING"
    elif stripped.startswith("[E") or "error" in head or stripped.startswith("Traceback"):
        level = "ERROR"
    return json.dumps({"level": level, "logger": "stdio", "message": line}, ensure_ascii=False)
