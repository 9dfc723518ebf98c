"""The OpenAPI description of the chat and token routes' bodies and of the one error shape.

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


def model_schema(model_ids: list[str], adapters: bool = False) -> dict[str, Any]:
    """`model`: one of the ids this server serves, or with LoRA adapters (which come and go
    with NIM_PEFT_SOURCE) any id that GET /v1/models lists."""
    if adapters:
        return {
            "type": "string",
            "examples": model_ids,
            "description": "The served model or a LoRA adapter listed by GET /v1/models.",
        }
    return {"enum": model_ids}


def chat_request_schema(model_ids: list[str], adapters: bool = False) -> dict[str, Any]:
    model = model_schema(model_ids, adapters)
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
    operation["responses"] = {
        "200": {
            "description": "A chat completion, or with `stream` an event stream of chunks",
            "content": {"application/json": {}, "text/event-stream": {}},
        },
        **_error_answers(),
    }
    return openapi


def _error_answers() -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/ErrorResponse"}
    error = {"content": {"application/json": {"schema": ref}}}
    return {
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
    }


# --- token routes: vLLM 0.32's request models (serve/tokenize/protocol.py) and answers ----------

_OPTIONAL_BOOL = {"anyOf": [{"type": "boolean"}, {"type": "null"}]}


def token_schemas(model_ids: list[str], adapters: bool = False) -> dict[str, dict[str, Any]]:
    """The token routes' request and response schemas, by component name."""
    model = model_schema(model_ids, adapters)
    tokenize_prompt = {
        "type": "object",
        "required": ["prompt"],
        "additionalProperties": False,
        "properties": {
            "model": model,
            "prompt": {"type": "string"},
            "add_special_tokens": {"type": "boolean", "default": True},
            "return_token_strs": _OPTIONAL_BOOL,
        },
    }
    tokenize_chat = {
        "type": "object",
        "required": ["messages"],
        "additionalProperties": False,
        "properties": {
            "model": model,
            "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
            "add_generation_prompt": {"type": "boolean", "default": True},
            "continue_final_message": {"type": "boolean", "default": False},
            "add_special_tokens": {"type": "boolean", "default": False},
            "return_token_strs": _OPTIONAL_BOOL,
            "reasoning_effort": {"enum": ["none", "low", "medium", "high"]},
            "chat_template_kwargs": {"type": "object"},
            "media_io_kwargs": {"type": "object"},
            "mm_processor_kwargs": {"type": "object"},
            "tools": {"type": "array", "items": _TOOL},
        },
    }
    return {
        "TokenizeRequest": {
            "description": "Text (`prompt`) or a chat (`messages`), never both",
            "oneOf": [tokenize_prompt, tokenize_chat],
        },
        "TokenizeResponse": {
            "type": "object",
            "required": ["count", "max_model_len", "tokens"],
            "properties": {
                "count": {"type": "integer"},
                "max_model_len": {"type": "integer"},
                "tokens": {"type": "array", "items": {"type": "integer"}},
                "token_strs": {
                    "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]
                },
            },
        },
        "DetokenizeRequest": {
            "type": "object",
            "required": ["tokens"],
            "additionalProperties": False,
            "properties": {
                "model": model,
                "tokens": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            },
        },
        "DetokenizeResponse": {
            "type": "object",
            "required": ["prompt"],
            "properties": {"prompt": {"type": "string"}},
        },
        "ChatRenderResponse": {
            "description": "vLLM's GenerateRequest (what the engine would be given) and the "
            "prompt its token ids spell",
            "type": "object",
            "required": ["request_id", "token_ids", "sampling_params", "prompt"],
            "properties": {
                "request_id": {"type": "string"},
                "token_ids": {"type": "array", "items": {"type": "integer"}},
                "prompt": {"type": "string"},
                "features": {
                    "description": "Multimodal item hashes and placeholder ranges; tensors "
                    "unless the request sets `mm_payload` to `none`",
                    "anyOf": [{"type": "object"}, {"type": "null"}],
                },
                "sampling_params": {"type": "object"},
                "model": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
        },
    }


def add_token_schemas(
    openapi: dict[str, Any], model_ids: list[str], adapters: bool = False
) -> dict[str, Any]:
    """Fill the token routes' bodies and answers into a generated document (after
    `add_chat_schemas`, whose request and error schemas the render route shares)."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(token_schemas(model_ids, adapters))
    routes = (
        ("/tokenize", "TokenizeRequest", "TokenizeResponse", "The prompt's tokens"),
        ("/detokenize", "DetokenizeRequest", "DetokenizeResponse", "The text of the tokens"),
        (
            "/v1/chat/completions/render",
            "ChatCompletionRequest",
            "ChatRenderResponse",
            "The prompt the model would be given; nothing is generated",
        ),
    )
    for path, request, response, description in routes:
        operation = openapi["paths"][path]["post"]
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(request)}},
        }
        operation["responses"] = {
            "200": {
                "description": description,
                "content": {"application/json": {"schema": _ref(response)}},
            },
            **_error_answers(),
        }
    return openapi


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}
