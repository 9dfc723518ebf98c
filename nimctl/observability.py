"""Logging set-up for nimctl and uvicorn, in NIM's line format or as JSON lines."""

from __future__ import annotations

import json
import logging
import logging.config
import os
from typing import Any

from nimctl.settings import NimSettings

# NIM's readable format: `INFO 2026-03-03 12:00:10.079 start_server.py:42] message`.
TEXT_FORMAT = "%(levelname)s %(asctime)s.%(msecs)03d %(filename)s:%(lineno)d] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
OWNED_LOGGERS = ("nimctl", "uvicorn", "uvicorn.error", "uvicorn.access")


def python_level(nim_level: str) -> str:
    """NIM's levels on Python's: DEFAULT is INFO, TRACE is DEBUG (vLLM's included)."""
    return {"DEFAULT": "INFO", "TRACE": "DEBUG"}.get(nim_level, nim_level)


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
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: NimSettings) -> None:
    level = python_level(settings.log_level)
    formatter: dict[str, Any] = (
        {"()": JsonLineFormatter}
        if settings.jsonl_logging
        else {"format": TEXT_FORMAT, "datefmt": DATE_FORMAT}
    )
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"nim": formatter},
            "handlers": {
                "stderr": {"class": "logging.StreamHandler", "formatter": "nim"},
            },
            "loggers": {
                name: {"handlers": ["stderr"], "level": level, "propagate": False}
                for name in OWNED_LOGGERS
            },
        }
    )
    # vLLM configures its own loggers, in this process and in its engine processes.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", level)
    if level != "DEBUG":
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
