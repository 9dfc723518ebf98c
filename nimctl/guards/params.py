"""Request parameters that drive the chat template and reasoning."""

from __future__ import annotations

from typing import Any

from nimctl.guards.base import GuardError
from nimctl.profiles import Profile


def translate(payload: dict[str, Any], profile: Profile) -> None:
    """Make the profile's reasoning default explicit when the request leaves it open.

    A model whose reasoning is off by default (Mistral Small 4) gets `reasoning_effort: "none"`,
    so that what reaches the model does not depend on the checkpoint's own default.
    """
    rules = profile.rules
    if (
        rules.reasoning_efforts
        and not profile.reasoning_default
        and "none" in rules.reasoning_efforts
        and payload.get("reasoning_effort") is None
        and not _thinking_set(payload)
    ):
        payload["reasoning_effort"] = "none"


def _thinking_set(payload: dict[str, Any]) -> bool:
    kwargs = payload.get("chat_template_kwargs")
    return isinstance(kwargs, dict) and "enable_thinking" in kwargs


def check(payload: dict[str, Any], profile: Profile) -> None:
    model = profile.served_model_name
    rules = profile.rules
    if payload.get("chat_template") is not None:
        fix = (
            "Mistral tokenizer models use their built-in chat template. "
            if rules.mistral_tokenizer
            else ""
        )
        raise GuardError(
            "no_request_chat_template",
            f"The chat_template request parameter is not supported by {model}.",
            f"{fix}Remove it; an operator can replace the template with NIM_CHAT_TEMPLATE.",
            "chat_template",
        )
    kwargs = payload.get("chat_template_kwargs")
    if isinstance(kwargs, dict) and kwargs:
        _check_template_kwargs(kwargs, profile)
    effort = payload.get("reasoning_effort")
    if isinstance(effort, str):
        _check_reasoning_effort(effort, profile)
    if (
        payload.get("include_reasoning") is False
        and payload.get("stream") is True
        and not rules.stream_include_reasoning_false
    ):
        raise GuardError(
            "include_reasoning_not_streamed",
            f'"include_reasoning": false is not supported for streaming responses on {model}.',
            "Drop it and ignore delta.reasoning in the stream, turn reasoning off with "
            '"chat_template_kwargs": {"enable_thinking": false}, or ask without streaming.',
            "include_reasoning",
        )


def _check_template_kwargs(kwargs: dict[str, Any], profile: Profile) -> None:
    model = profile.served_model_name
    rules = profile.rules
    if rules.mistral_tokenizer:
        hint = " Use reasoning_effort to switch reasoning." if rules.reasoning_efforts else ""
        raise GuardError(
            "no_chat_template_kwargs",
            f"chat_template_kwargs is not supported by {model}: Mistral tokenizer models render "
            "a built-in template that ignores or rejects template variables.",
            f"Remove chat_template_kwargs.{hint}",
            "chat_template_kwargs",
        )
    unknown = sorted(set(kwargs) - set(rules.chat_template_kwargs))
    if unknown:
        accepted = ", ".join(rules.chat_template_kwargs) or "none"
        raise GuardError(
            "known_chat_template_kwargs",
            f"chat_template_kwargs {', '.join(repr(k) for k in unknown)} would be ignored by "
            f"{model}'s chat template.",
            f"Remove them; accepted keys: {accepted}.",
            f"chat_template_kwargs.{unknown[0]}",
        )


def _check_reasoning_effort(effort: str, profile: Profile) -> None:
    model = profile.served_model_name
    accepted = profile.rules.reasoning_efforts
    if not accepted:
        raise GuardError(
            "reasoning_effort_values",
            f"reasoning_effort is not supported by {model}: it has no reasoning mode.",
            "Remove reasoning_effort.",
            "reasoning_effort",
        )
    if effort not in accepted:
        raise GuardError(
            "reasoning_effort_values",
            f"reasoning_effort {effort!r} is not supported by {model}.",
            f"Use one of: {', '.join(repr(a) for a in accepted)}.",
            "reasoning_effort",
        )
