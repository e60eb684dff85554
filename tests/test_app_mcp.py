"""Steering as MCP tools: the app launched with Gradio's MCP server, its tools listed and one
called over the Streamable HTTP endpoint with the `mcp` client."""

import ast
import asyncio

import pytest

import app
from steering.serve.arena import Arena
from steering.serve.service import SteeringService

mcp = pytest.importorskip("mcp")
from mcp.client.streamable_http import streamablehttp_client  # noqa: E402


@pytest.fixture(scope="module")
def mcp_url(tiny_env):  # noqa: F811
    service = SteeringService(
        database_url=f"sqlite:///{tiny_env / 'mcp.db'}", sweep_batch=2, dtype="float32"
    )
    demo = app.build_demo(service, Arena(service))
    _, url, _ = demo.launch(
        prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", mcp_server=True
    )
    yield f"{url.rstrip('/')}/gradio_api/mcp/"
    demo.close()


async def session_run(url, work):
    async with streamablehttp_client(url) as (read, write, _):
        async with mcp.ClientSession(read, write) as session:
            await session.initialize()
            return await work(session)


def test_the_steering_tools_are_listed_with_their_docstrings(mcp_url):
    tools = asyncio.run(session_run(mcp_url, lambda s: s.list_tools())).tools
    by_name = {t.name: t for t in tools}
    assert {"generate", "score", "sweep"} <= set(by_name)
    generate = by_name["generate"]
    assert "steered to a weighting" in generate.description
    properties = generate.inputSchema["properties"]
    assert {"prompt", "weights", "method", "max_new_tokens", "temperature", "seed"} <= set(
        properties
    )
    assert "one non-negative number per objective" in properties["weights"]["description"]
    assert "z-scores" in by_name["score"].description
    # what the page fills in from the request is no tool parameter
    for tool in tools:
        assert not set(tool.inputSchema.get("properties", {})) & {"address", "hub_user"}


def test_a_tool_call_scores_a_response(mcp_url):
    async def call(session):
        return await session.call_tool("score", {"prompt": "Hi", "response": "What a lovely day!"})

    result = asyncio.run(session_run(mcp_url, call))
    assert not result.isError
    # Gradio's MCP server writes a returned dict as its Python text
    scores = ast.literal_eval(result.content[0].text)
    assert scores["positivity"]["raw"] > 0 and "conciseness" in scores
