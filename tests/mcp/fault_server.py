"""An MCP server that misbehaves on request, written with the SDK's low-level ``Server``.

Run over stdio (default) or streamable HTTP (``--http PORT``). Tools:

* ``echo`` {text}: answers the text; ``pid``: its process id (to tell restarts apart);
  ``cwd``: its working directory (to tell where it runs);
* ``crash``: the process exits in the middle of the call;
* ``hang``: never answers;
* ``big`` {size}: a text result of ``size`` characters (default 5 MB);
* ``picture``: an image block; ``structured``: structured content only; ``fail``: is_error;
* ``peek``: read-only (annotated ``readOnlyHint``);
* ``broken``: an input schema that is not a valid JSON schema; ``bare``: no input schema.

``--slow-start S`` writes a line to stderr and sleeps S seconds before serving. A prompt
``greet`` {name, greeting} and a resource ``note://hello`` are offered too.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any


def _slow_start() -> None:
    """Before the SDK's imports (about a second), so the line is there however soon the
    client gives up."""
    if "--slow-start" in sys.argv:
        seconds = float(sys.argv[sys.argv.index("--slow-start") + 1])
        sys.stderr.write(f"fault_server: warming up for {seconds} s\n")
        sys.stderr.flush()
        time.sleep(seconds)


_slow_start()

import anyio  # noqa: E402
import mcp_types as types  # noqa: E402
from mcp.server.lowlevel.server import Server  # noqa: E402

TOOLS: list[dict[str, Any]] = [
    {
        "name": "echo",
        "description": "Answer the text.",
        "inputSchema": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    },
    {"name": "pid", "description": "Process id.", "inputSchema": {"type": "object"}},
    {"name": "cwd", "description": "Working directory.", "inputSchema": {"type": "object"}},
    {"name": "crash", "description": "Exit mid-call.", "inputSchema": {"type": "object"}},
    {"name": "hang", "description": "Never answer.", "inputSchema": {"type": "object"}},
    {
        "name": "big",
        "description": "A large result.",
        "inputSchema": {"type": "object", "properties": {"size": {"type": "integer"}}},
    },
    {"name": "picture", "description": "An image.", "inputSchema": {"type": "object"}},
    {"name": "structured", "description": "Structured.", "inputSchema": {"type": "object"}},
    {"name": "fail", "description": "A tool error.", "inputSchema": {"type": "object"}},
    {
        "name": "peek",
        "description": "Read-only.",
        "inputSchema": {"type": "object"},
        "annotations": {"readOnlyHint": True},
    },
    {
        "name": "broken",
        "description": "Invalid schema.",
        "inputSchema": {"type": "object", "properties": {"x": {"type": "no-such-type"}}},
    },
    # Sent without any input schema over stdio (see ``_StripSchemas``); the SDK's server
    # would refuse to send such a listing itself.
    {"name": "bare", "description": "No schema.", "inputSchema": {"type": "object", "x-strip": 1}},
]


async def list_tools(ctx: Any, params: Any) -> dict[str, Any]:
    return {"tools": TOOLS}


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    args = params.arguments or {}
    name = params.name
    if name == "echo":
        return _text(str(args.get("text", "")))
    if name == "pid":
        return _text(str(os.getpid()))
    if name == "cwd":
        return _text(os.getcwd())
    if name == "crash":
        sys.stderr.write("fault_server: crashing on purpose\n")
        sys.stderr.flush()
        os._exit(3)
    if name == "hang":
        await anyio.sleep_forever()
    if name == "big":
        size = int(args.get("size", 5 * 1024 * 1024))
        return _text("x" * (size - 4) + "END!")
    if name == "picture":
        return types.CallToolResult(
            content=[types.ImageContent(data="iVBORw0KGgo" * 100, mime_type="image/png")]
        )
    if name == "structured":
        return types.CallToolResult(content=[], structured_content={"answer": 42})
    if name == "fail":
        return types.CallToolResult(
            content=[types.TextContent(text="it went wrong")], is_error=True
        )
    return _text(f"{name} ran")


async def list_prompts(ctx: Any, params: Any) -> types.ListPromptsResult:
    return types.ListPromptsResult(
        prompts=[
            types.Prompt(
                name="greet",
                description="Greet someone.",
                arguments=[
                    types.PromptArgument(name="name", required=True),
                    types.PromptArgument(name="greeting", required=False),
                ],
            )
        ]
    )


async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
    args = params.arguments or {}
    text = f"{args.get('greeting', 'Hello')}, {args['name']}! Please review the code."
    return types.GetPromptResult(
        messages=[types.PromptMessage(role="user", content=types.TextContent(text=text))]
    )


async def list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
    return types.ListResourcesResult(
        resources=[types.Resource(uri="note://hello", name="hello", mime_type="text/plain")]
    )


async def read_resource(
    ctx: Any, params: types.ReadResourceRequestParams
) -> types.ReadResourceResult:
    return types.ReadResourceResult(
        contents=[types.TextResourceContents(uri=params.uri, text="hello from a resource")]
    )


def _text(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)])


def build() -> Server[Any]:
    return Server(
        "fault",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
        on_list_resources=list_resources,
        on_read_resource=read_resource,
    )


async def serve_stdio(server: Server[Any]) -> None:
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read, write):
        await server.run(read, _StripSchemas(write), server.create_initialization_options())


class _StripSchemas:
    """The write stream, with ``inputSchema`` removed from tools marked ``x-strip``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def send(self, item: Any) -> None:
        result = getattr(getattr(item, "message", None), "result", None)
        if isinstance(result, dict) and isinstance(result.get("tools"), list):
            for tool in result["tools"]:
                if isinstance(tool.get("inputSchema"), dict) and "x-strip" in tool["inputSchema"]:
                    del tool["inputSchema"]
        await self._inner.send(item)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def __aenter__(self) -> _StripSchemas:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._inner.__aexit__(*exc)


def serve_http(server: Server[Any], port: int) -> None:
    import uvicorn

    app = server.streamable_http_app()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, default=None)
    parser.add_argument("--slow-start", type=float, default=0.0)
    opts = parser.parse_args()
    server = build()
    if opts.http is not None:
        serve_http(server, opts.http)
    else:
        anyio.run(serve_stdio, server)


if __name__ == "__main__":
    main()
