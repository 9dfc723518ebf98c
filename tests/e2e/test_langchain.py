"""LangChain's ChatOpenAI, as the seed pages use it, with an image."""

from __future__ import annotations

from langchain_core.messages import AIMessage, HumanMessage
from langchain_openai import ChatOpenAI

from tests.support.tiny import TINY_MODEL


def test_invoke_with_image(tiny_server, png_url):
    model = ChatOpenAI(
        model=TINY_MODEL,
        openai_api_base=f"{tiny_server.base_url}/v1",
        openai_api_key="not-needed",
        max_tokens=8,
    )
    message = HumanMessage(
        content=[
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": png_url}},
        ],
    )
    reply = model.invoke([message])
    assert isinstance(reply, AIMessage)
    assert isinstance(reply.content, str)
    usage = reply.usage_metadata
    assert usage is not None and usage["output_tokens"] <= 8
    assert reply.response_metadata["finish_reason"] in {"stop", "length"}
    assert reply.response_metadata["model_name"] == TINY_MODEL


def test_stream(tiny_server):
    model = ChatOpenAI(
        model=TINY_MODEL,
        openai_api_base=f"{tiny_server.base_url}/v1",
        openai_api_key="not-needed",
        max_tokens=8,
    )
    chunks = list(model.stream("Hello"))
    assert chunks and all(isinstance(c.content, str) for c in chunks)
