"""Message roles: which roles exist, and the strict alternation Mistral's models require."""

from __future__ import annotations

from typing import Any

from nimctl.guards.base import GuardError, messages
from nimctl.profiles import Profile

KNOWN_ROLES = ("system", "developer", "user", "assistant", "tool")
ALTERNATION = "strict_alternation"


SHAPE = "message_shape"


def check_shape(payload: dict[str, Any]) -> None:
    """The structure every later rule relies on; vLLM checks message contents only lazily,
    deep inside rendering, where a mistake would come back as an unreadable pydantic dump."""
    found = payload.get("messages")
    if found is None:
        raise GuardError(
            SHAPE, "The request has no messages.", "Send a non-empty list of messages.", "messages"
        )
    if not isinstance(found, list) or not found:
        raise GuardError(
            SHAPE,
            f"messages must be a non-empty list, not {_describe(found)}.",
            'Send e.g. [{"role": "user", "content": "Hello"}].',
            "messages",
        )
    for i, message in enumerate(found):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise GuardError(
                SHAPE,
                f"{where} must be an object, not {_describe(message)}.",
                'Send e.g. {"role": "user", "content": "Hello"}.',
                where,
            )
        if not isinstance(message.get("role"), str):
            raise GuardError(
                SHAPE,
                f"{where}.role must be a string, not {_describe(message.get('role'))}.",
                "Use system, user, assistant or tool.",
                f"{where}.role",
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise GuardError(
                SHAPE,
                f"{where}.content must be a string or a list of content parts, not "
                f"{_describe(content)}.",
                'Send text as a string, or parts such as {"type": "text", "text": "..."}.',
                f"{where}.content",
            )
        for j, part in enumerate(content if isinstance(content, list) else []):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise GuardError(
                    SHAPE,
                    f"{where}.content[{j}] must be a content part (an object with a string "
                    f"'type'), not {_describe(part)}.",
                    'Use parts such as {"type": "text", "text": "..."} or {"type": '
                    '"image_url", "image_url": {"url": "..."}}.',
                    f"{where}.content[{j}]",
                )
        calls = message.get("tool_calls")
        if calls is not None and not (
            isinstance(calls, list) and all(isinstance(c, dict) for c in calls)
        ):
            raise GuardError(
                SHAPE,
                f"{where}.tool_calls must be a list of tool call objects, not {_describe(calls)}.",
                'Send e.g. [{"id": "call_1", "type": "function", "function": {"name": "f", '
                '"arguments": "{}"}}].',
                f"{where}.tool_calls",
            )


def _describe(value: Any) -> str:
    name = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else f"a {type(value).__name__}"
    )
    return name if not isinstance(value, list) or value else "an empty list"


def check(payload: dict[str, Any], profile: Profile) -> None:
    found = messages(payload)
    for i, message in found:
        role = message.get("role")
        if role == "function":
            raise GuardError(
                "no_function_role",
                f"messages[{i}] has role 'function', which this server does not support.",
                "Send a function's result as a message with role 'tool' and the tool_call_id "
                "of the call it answers.",
                f"messages[{i}].role",
            )
        if isinstance(role, str) and role not in KNOWN_ROLES:
            raise GuardError(
                "known_roles",
                f"messages[{i}] has the unknown role {role!r}.",
                "Use system, user, assistant or tool.",
                f"messages[{i}].role",
            )
    raw = payload.get("messages")
    if profile.rules.strict_alternation and isinstance(raw, list) and len(found) == len(raw):
        _check_alternation(payload, profile, [m for _, m in found])


def _check_alternation(
    payload: dict[str, Any], profile: Profile, conversation: list[dict[str, Any]]
) -> None:
    model = profile.served_model_name
    previous = ""  # "", "user", "assistant", "assistant_calls" or "tool"
    for i, message in enumerate(conversation):
        role = message.get("role")
        if role in ("system", "developer"):
            if i != 0:
                _refuse(
                    i,
                    f"messages[{i}] is a system message, but {model} only takes one, first.",
                    "Move the system instructions into the first message.",
                )
            continue
        if isinstance(role, str):  # a role of another type is the validator's to refuse
            allowed = {
                "user": ("", "assistant"),
                "assistant": ("user", "tool"),
                "tool": ("assistant_calls", "tool"),
            }.get(role)
            if allowed is not None and previous not in allowed:
                _refuse(i, _order_problem(i, role, previous, model), _order_fix(role, previous))
        calls = role == "assistant" and bool(message.get("tool_calls"))
        previous = "assistant_calls" if calls else str(role)
    _check_ending(payload, model, previous, len(conversation) - 1)


def _order_problem(i: int, role: str, previous: str, model: str) -> str:
    if previous == "":
        return (
            f"messages[{i}] has role '{role}', but on {model} the conversation starts "
            "with a user message (after an optional system message)."
        )
    after = {"assistant_calls": "an assistant message with tool_calls"}.get(
        previous, f"a '{previous}' message"
    )
    return (
        f"messages[{i}] has role '{role}' right after {after}, but {model} requires "
        "strict user/assistant alternation (tool calls and their results take the "
        "assistant's turn)."
    )


def _order_fix(role: str, previous: str) -> str:
    if role == previous == "user":
        return "Merge consecutive user messages into one, or put the assistant's reply between."
    if role == previous == "assistant":
        return "Merge consecutive assistant messages into one, or put a user message between."
    if role == "tool":
        return "Send tool results right after the assistant message whose tool_calls they answer."
    if previous == "assistant_calls":
        return "Answer every tool call with a 'tool' message before the next turn."
    return "Start with a user message, then alternate assistant and user."


def _check_ending(payload: dict[str, Any], model: str, last: str, index: int) -> None:
    if last == "assistant":
        if (
            payload.get("add_generation_prompt") is False
            and payload.get("continue_final_message") is True
        ):
            return
        _refuse(
            index,
            f"The conversation ends with an assistant message (messages[{index}]); {model} "
            "answers a conversation that ends with a user message.",
            'End with a user message, or set "add_generation_prompt": false and '
            '"continue_final_message": true to continue that assistant message.',
        )
    if last == "assistant_calls":
        _refuse(
            index,
            f"The conversation ends with tool calls (messages[{index}]) that have no results.",
            "Add a 'tool' message with the result of each call.",
        )


def _refuse(index: int, problem: str, fix: str) -> None:
    raise GuardError(ALTERNATION, problem, fix, f"messages[{index}].role")
