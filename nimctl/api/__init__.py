"""NIM's HTTP contract: health, models, metrics and OpenAI-compatible chat."""

from nimctl.api.app import create_app

__all__ = ["create_app"]
