"""The OpenAPI description of the chat route's request and of the one error shape.

The route reads the raw JSON itself (guards see exactly what the client sent, and vLLM's own
model validates it afterwards), so FastAPI cannot derive a schema from a signature. This one is
written out so that clients, generators and fuzzers (schemathesis, in the reliability suite)
know the contract: the OpenAI chat request with the vLLM and NIM extensions the seed pages use.
Other fields of vLLM's ChatCompletionRequest are accepted too; fields vLLM does not know are
refused with a 400 (nothing a client sends is silently dropped).
"""

from __future__ import annotations

from typing import Any

_TEXT_PART = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
}
_URL = {
    "type": "object",
    "required": ["url"],
    "properties": {
        "url": {
            "type": "string",
            "description": "http(s) URL, data URL (base64) or file:// under NIM_MEDIA_LOCAL_PATH",
        },
        "detail": {"enum": ["auto", "low", "high"]},
    },
}
_IMAGE_PART = {
    "type": "object",
    "required": ["type", "image_url"],
    "properties": {"type": {"const": "image_url"}, "image_url": _URL},
}
_VIDEO_PART = {
    "type": "object",
    "required": ["type", "video_url"],
    "properties": {"type": {"const": "video_url"}, "video_url": _URL},
}
_TEXT_CONTENT = {"anyOf": [{"type": "string"}, {"type": "array", "items": _TEXT_PART}]}
_TOOL_CALL = {
    "type": "object",
    "required": ["id", "type", "function"],
    "properties": {
        "id": {"type": "string"},
        "type": {"const": "function"},
        "function": {
            "type": "object",
            "required": ["name", "arguments"],
            "properties": {
                "name": {"type": "string"},
                "arguments": {"type": "string", "description": "JSON-encoded arguments"},
            },
        },
    },
}
_MESSAGE = {
    "oneOf": [
        {
            "type": "object",
            "required": ["role", "content"],
            "properties": {
                "role": {"enum": ["system", "developer"]},
                "content": _TEXT_CONTENT,
                "name": {"type": "string"},
            },
        },
        {
            "type": "object",
            "required": ["role", "content"],
            "properties": {
                "role": {"const": "user"},
                "content": {
                    "anyOf": [
                        {"type": "string"},
                        {
                            "type": "array",
                            "items": {"oneOf": [_TEXT_PART, _IMAGE_PART, _VIDEO_PART]},
                        },
                    ]
                },
                "name": {"type": "string"},
            },
        },
        {
            "type": "object",
            "required": ["role"],
            "properties": {
                "role": {"const": "assistant"},
                "content": {"anyOf": [_TEXT_CONTENT, {"type": "null"}]},
                "tool_calls": {"type": "array", "items": _TOOL_CALL},
                "reasoning": {"type": "string"},
                "name": {"type": "string"},
            },
        },
        {
            "type": "object",
            "required": ["role", "content", "tool_call_id"],
            "properties": {
                "role": {"const": "tool"},
                "content": _TEXT_CONTENT,
                "tool_call_id": {"type": "string"},
            },
        },
    ]
}
_TOOL = {
    "type": "object",
    "required": ["type", "function"],
    "properties": {
        "type": {"const": "function"},
        "function": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
                "description": {"type": "string"},
                "parameters": {"type": "object"},
            },
        },
    },
}
_TOOL_CHOICE = {
    "anyOf": [
        {"enum": ["none", "auto", "required"]},
        {
            "type": "object",
            "required": ["type", "function"],
            "properties": {
                "type": {"const": "function"},
                "function": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}},
                },
            },
        },
    ]
}
_POSITIVE_INT = {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]}


def chat_request_schema(model_ids: list[str], adapters: bool = False) -> dict[str, Any]:
    """The request schema; `model` is one of the ids this server serves, or with LoRA adapters
    (which come and go with NIM_PEFT_SOURCE) any id that GET /v1/models lists."""
    model: dict[str, Any] = {"enum": model_ids}
    if adapters:
        model = {
            "type": "string",
            "examples": model_ids,
            "description": "The served model or a LoRA adapter listed by GET /v1/models.",
        }
    return {
        "type": "object",
        "required": ["model", "messages"],
        "additionalProperties": True,
        "properties": {
            "model": model,
            "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
            "max_tokens": _POSITIVE_INT,
            "max_completion_tokens": _POSITIVE_INT,
            "min_tokens": {"type": "integer", "minimum": 0},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "top_k": {"type": "integer", "minimum": -1},
            "n": {"type": "integer", "minimum": 1},
            "seed": {"type": "integer"},
            "stop": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "string"}},
                    {"type": "null"},
                ]
            },
            "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
            "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
            "repetition_penalty": {"type": "number", "exclusiveMinimum": 0},
            "logprobs": {"type": "boolean"},
            "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20},
            "ignore_eos": {"type": "boolean"},
            "stream": {"type": "boolean"},
            "stream_options": {
                "type": "object",
                "properties": {"include_usage": {"type": "boolean"}},
            },
            "tools": {"type": "array", "items": _TOOL},
            "tool_choice": _TOOL_CHOICE,
            "response_format": {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"enum": ["text", "json_object", "json_schema"]}},
            },
            "reasoning_effort": {"enum": ["none", "low", "medium", "high"]},
            "include_reasoning": {"type": "boolean"},
            "chat_template_kwargs": {"type": "object"},
            "add_generation_prompt": {"type": "boolean"},
            "continue_final_message": {"type": "boolean"},
            "media_io_kwargs": {"type": "object"},
            "mm_processor_kwargs": {"type": "object"},
            "user": {"type": "string"},
        },
    }


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": "integer"},
            },
        }
    },
}


def add_chat_schemas(
    openapi: dict[str, Any], model_ids: list[str], adapters: bool = False
) -> dict[str, Any]:
    """Fill the chat route's request body and error answers into a generated document."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    schemas["ChatCompletionRequest"] = chat_request_schema(model_ids, adapters)
    schemas["ErrorResponse"] = ERROR_SCHEMA
    operation = openapi["paths"]["/v1/chat/completions"]["post"]
    operation["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}
        },
    }
    ref = {"$ref": "#/components/schemas/ErrorResponse"}
    error = {"content": {"application/json": {"schema": ref}}}
    operation["responses"] = {
        "200": {
            "description": "A chat completion, or with `stream` an event stream of chunks",
            "content": {"application/json": {}, "text/event-stream": {}},
        },
        **{
            code: {"description": why, **error}
            for code, why in (
                ("400", "The request breaks a rule; the message names it and the fix"),
                ("401", "NIM_API_KEY is set and the request lacks the key"),
                ("404", "Unknown model"),
                ("408", "The body did not arrive within NIM_REQUEST_BODY_TIMEOUT"),
                ("413", "The body is larger than NIM_MAX_REQUEST_BYTES"),
                ("431", "The request line and headers are over 64 KiB or 100 fields"),
                ("503", "The model is loading or the server is shutting down"),
            )
        },
    }
    return openapi
