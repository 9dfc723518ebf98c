"""Tool calling: only with the profile's tool parser, and tool_choice only with tools."""

from __future__ import annotations

from typing import Any

from nimctl.guards.base import GuardError
from nimctl.profiles import Profile


def translate(payload: dict[str, Any]) -> None:
    """A named tool_choice may omit "type" (NIM documents it as optional): it is "function"."""
    choice = payload.get("tool_choice")
    if (
        isinstance(choice, dict)
        and "type" not in choice
        and isinstance(choice.get("function"), dict)
    ):
        choice["type"] = "function"


def check(payload: dict[str, Any], profile: Profile) -> None:
    model = profile.served_model_name
    tools = payload.get("tools")
    choice = payload.get("tool_choice")
    if tools and profile.tool_call_parser is None:
        raise GuardError(
            "tools_supported",
            f"Tool calling is not supported by {model}.",
            "Remove tools and tool_choice.",
            "tools",
        )
    if choice is not None and not tools:
        raise GuardError(
            "tool_choice_needs_tools",
            "tool_choice can only be set together with tools.",
            "Add the tools the model may call, or remove tool_choice.",
            "tool_choice",
        )
    if isinstance(choice, dict) and isinstance(tools, list):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        names = [
            t["function"].get("name")
            for t in tools
            if isinstance(t, dict) and isinstance(t.get("function"), dict)
        ]
        if isinstance(name, str) and name not in names:
            raise GuardError(
                "named_tool_exists",
                f"tool_choice names the function {name!r}, which is not among the tools.",
                f"Name one of: {', '.join(repr(n) for n in names) or 'none'}.",
                "tool_choice.function.name",
            )
