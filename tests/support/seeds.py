"""The request examples of the four seed model pages and the API reference (shared/seeds/).

Bodies are as the pages write them; only the host changes, and public image URLs become base64
data URLs of generated images of the same format (there is no internet here). A `stream` flag
marks the streaming variants the pages show.
"""

from __future__ import annotations

from typing import Any

from tests.support.media import image_data_url

LARGE3 = "mistralai/mistral-large-3-675b-instruct-2512"
SMALL4 = "mistralai/mistral-small-4-119b-2603"
QWEN = "qwen/qwen3.5-397b-a17b"
NEMOTRON = "nvidia/llama-3.1-nemotron-nano-vl-8b-v1"

# Stand-ins for the pages' example1b.jpg, dgx-b200-hero...jpg and specifications.png.
BOARDWALK_JPG = image_data_url("JPEG", (96, 64), "green")
DGX_JPG = image_data_url("JPEG", (80, 60), "gray")
SPECIFICATIONS_PNG = image_data_url("PNG", (64, 96), "white")

ITINERARY = "Create a detailed itinerary for a week-long adventure trip through Southeast Asia."
TEXT_ONLY = [
    {"role": "system", "content": "You are a helpful assistant"},
    {"role": "user", "content": ITINERARY},
]
EXTRACT_TABLE = "Please extract the table in the image as HTML"
TRAINS = (
    "Solve step by step: if a train leaves at 3pm going 60mph and another at 4pm going 80mph, "
    "when do they meet?"
)
FP16_QUESTION = 'How many times more "FP16Tensor Core" does H100 SXM have than H100 NVL?'


# One tool for the twins that call tools (its city is an enum, so a random model can finish a call).
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "enum": ["Paris", "Lyon"]}},
                "required": ["city"],
            },
        },
    }
]


def image_question(url: str) -> list[dict[str, Any]]:
    """The pages' first request: text, then the image (Mistral and Qwen pages)."""
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]


def multi_turn(url: str, answer: str, follow_up: str) -> list[dict[str, Any]]:
    return [
        *image_question(url),
        {"role": "assistant", "content": answer},
        {"role": "user", "content": follow_up},
    ]


NEMOTRON_IMAGE_FIRST = [
    {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": SPECIFICATIONS_PNG}},
            {"type": "text", "text": FP16_QUESTION},
        ],
    }
]
NEMOTRON_ANSWER = (
    "The H100 SXM has 1,979 FP16 Tensor Cores, while the H100 NVL has 1,671 FP16 Tensor Cores."
)

# name -> (served model, request body); the chat-completions examples of each page.
EXAMPLES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "mistral-large-3-675b-instruct-2512-tiny": [
        ("image", {"messages": image_question(BOARDWALK_JPG), "max_tokens": 1024}),
        (
            "image stream",
            {"messages": image_question(BOARDWALK_JPG), "max_tokens": 1024, "stream": True},
        ),
        ("text only", {"messages": TEXT_ONLY, "max_tokens": 4096}),
        (
            "multi-turn",
            {
                "messages": multi_turn(
                    BOARDWALK_JPG,
                    "This image shows a boardwalk in a field of tall grass. ...",
                    "What would be the best season to visit this place?",
                ),
                "max_tokens": 4096,
            },
        ),
        # API reference: image part first, temperature 0.
        (
            "api reference",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": BOARDWALK_JPG}},
                            {"type": "text", "text": "What is in this image?"},
                        ],
                    }
                ],
                "max_tokens": 256,
                "temperature": 0,
            },
        ),
    ],
    "mistral-small-4-119b-2603-tiny": [
        ("image", {"messages": image_question(BOARDWALK_JPG), "max_tokens": 1024}),
        (
            "image stream",
            {"messages": image_question(BOARDWALK_JPG), "max_tokens": 1024, "stream": True},
        ),
        (
            "reasoning high stream",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "text",
                                "text": TRAINS,
                            }
                        ],
                    }
                ],
                "reasoning_effort": "high",
                "max_tokens": 4096,
                "stream": True,
            },
        ),
        ("reasoning none", {"messages": TEXT_ONLY, "reasoning_effort": "none", "max_tokens": 64}),
        ("text only stream", {"messages": TEXT_ONLY, "max_tokens": 4096, "stream": True}),
        (
            "multi-turn",
            {
                "messages": multi_turn(
                    DGX_JPG,
                    "This image shows an **NVIDIA DGX system**, which "
                    "is NVIDIAs flagship line of AI supercomputers/servers. ...",
                    "When was this system released?",
                ),
                "max_tokens": 4096,
            },
        ),
    ],
    "qwen3.5-397b-a17b-tiny": [
        ("image", {"messages": image_question(BOARDWALK_JPG), "max_tokens": 1024}),
        (
            "image stream",
            {"messages": image_question(BOARDWALK_JPG), "max_tokens": 1024, "stream": True},
        ),
        (
            "reasoning off",
            {
                "messages": image_question(DGX_JPG),
                "chat_template_kwargs": {"enable_thinking": False},
                "max_tokens": 4096,
            },
        ),
        (
            "image frame size",
            {
                "messages": [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": DGX_JPG}},
                            {"type": "text", "text": "What is in this image?"},
                        ],
                    },
                ],
                "max_tokens": 1024,
                "mm_processor_kwargs": {"size": {"shortest_edge": 1568, "longest_edge": 262144}},
            },
        ),
        ("text only stream", {"messages": TEXT_ONLY, "max_tokens": 4096, "stream": True}),
        (
            "multi-turn",
            {
                "messages": multi_turn(
                    DGX_JPG,
                    "This image shows an **NVIDIA DGX system**, which "
                    "is NVIDIAs flagship line of AI supercomputers/servers. ...",
                    "When was this system released?",
                ),
                "max_tokens": 4096,
            },
        ),
    ],
    "llama-3.1-nemotron-nano-vl-8b-v1-tiny": [
        (
            "image first",
            {
                "messages": NEMOTRON_IMAGE_FIRST,
                "stream": False,
                "max_tokens": 256,
                "temperature": 0,
            },
        ),
        (
            "image first stream",
            {"messages": NEMOTRON_IMAGE_FIRST, "stream": True, "max_tokens": 256, "temperature": 0},
        ),
        (
            "img tag",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": f'<img src="{SPECIFICATIONS_PNG}" /> {FP16_QUESTION}',
                    }
                ],
                "max_tokens": 256,
                "temperature": 0,
            },
        ),
        ("text only", {"messages": TEXT_ONLY, "max_tokens": 256, "temperature": 0}),
        (
            "multi-turn",
            {
                "messages": [
                    *NEMOTRON_IMAGE_FIRST,
                    {"role": "assistant", "content": NEMOTRON_ANSWER},
                    {"role": "user", "content": EXTRACT_TABLE},
                ],
                "max_tokens": 1024,
                "temperature": 0,
            },
        ),
    ],
}

# The LangChain example of each page: (served model, content parts, extra ChatOpenAI kwargs).
IMAGE_QUESTION_PARTS = image_question(BOARDWALK_JPG)[0]["content"]
LANGCHAIN: dict[str, tuple[str, list[dict[str, Any]], dict[str, Any]]] = {
    "mistral-large-3-675b-instruct-2512-tiny": (
        LARGE3,
        image_question(BOARDWALK_JPG)[0]["content"],
        {},
    ),
    "mistral-small-4-119b-2603-tiny": (SMALL4, IMAGE_QUESTION_PARTS, {}),
    "qwen3.5-397b-a17b-tiny": (QWEN, IMAGE_QUESTION_PARTS, {}),
    "llama-3.1-nemotron-nano-vl-8b-v1-tiny": (
        NEMOTRON,
        [
            {"type": "image_url", "image_url": {"url": SPECIFICATIONS_PNG}},
            {"type": "text", "text": FP16_QUESTION},
        ],
        {"temperature": 0},
    ),
}
SERVED = {
    "mistral-large-3-675b-instruct-2512-tiny": LARGE3,
    "mistral-small-4-119b-2603-tiny": SMALL4,
    "qwen3.5-397b-a17b-tiny": QWEN,
    "llama-3.1-nemotron-nano-vl-8b-v1-tiny": NEMOTRON,
}
