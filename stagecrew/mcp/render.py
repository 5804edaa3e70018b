"""MCP results as text a model can use.

A model reads text, so every content block becomes text: text parts verbatim, binary parts
(images, audio, blobs) a one-line placeholder with their type and size (the bytes would only
burn context as base64), embedded resources their text, and structured content JSON when the
text parts do not already carry it. Results are bounded like ``bash`` output: beyond the limit
the middle is cut and a note says how much, so a server answering megabytes cannot flood the
context.
"""

from __future__ import annotations

import json
from typing import Any

import mcp_types as types

from stagecrew.tools.base import ToolResult

# The same bound as bash output (stagecrew.tools.shell.OUTPUT_LIMIT), not imported to keep
# this module free of the shell tool's imports.
OUTPUT_LIMIT = 30_000


def render_tool_result(
    result: types.CallToolResult,
    *,
    limit: int = OUTPUT_LIMIT,
    metadata: dict[str, Any] | None = None,
) -> ToolResult:
    """A ``CallToolResult`` as a ``ToolResult`` (``is_error`` carried over)."""
    text = render_blocks(result.content)
    structured = result.structured_content
    if structured is not None and not _carries(result.content, structured):
        dumped = json.dumps(structured, indent=2, ensure_ascii=False, default=str)
        text = f"{text}\n{dumped}" if text else dumped
    if not text:
        text = "(the tool returned no content)"
    text, cut = truncate(text, limit)
    meta = dict(metadata or {})
    if cut:
        meta["truncated_chars"] = cut
    return ToolResult(content=text, is_error=bool(result.is_error), metadata=meta)


def render_blocks(blocks: list[Any]) -> str:
    return "\n".join(render_block(b) for b in blocks)


def render_block(block: Any) -> str:
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.ImageContent):
        return f"[image: {block.mime_type}, {_size(_b64_len(block.data))}]"
    if isinstance(block, types.AudioContent):
        return f"[audio: {block.mime_type}, {_size(_b64_len(block.data))}]"
    if isinstance(block, types.EmbeddedResource):
        return render_resource_contents(block.resource)
    if isinstance(block, types.ResourceLink):
        what = f", {block.mime_type}" if block.mime_type else ""
        desc = f": {block.description}" if block.description else ""
        return f"[resource link: {block.uri} ({block.name}{what}){desc}]"
    return f"[{getattr(block, 'type', type(block).__name__)} content]"


def render_resource_contents(contents: Any) -> str:
    """A resource's text as it is; a binary one as a placeholder naming it."""
    if isinstance(contents, types.TextResourceContents):
        return contents.text
    if isinstance(contents, types.BlobResourceContents):
        mime = contents.mime_type or "binary"
        return f"[resource {contents.uri}: {mime}, {_size(_b64_len(contents.blob))}]"
    return f"[resource {getattr(contents, 'uri', '?')}]"


def render_read_resource(result: types.ReadResourceResult, *, limit: int = OUTPUT_LIMIT) -> str:
    parts = []
    for contents in result.contents:
        body = render_resource_contents(contents)
        if len(result.contents) > 1:
            body = f"--- {contents.uri}\n{body}"
        parts.append(body)
    text, _ = truncate("\n".join(parts) or "(the resource is empty)", limit)
    return text


def render_prompt(result: types.GetPromptResult) -> str:
    """A prompt's messages as one user message: user text as it is, anything the server put in
    another role's mouth marked with that role (the chat sends it all as the person's turn)."""
    parts = []
    for message in result.messages:
        body = render_block(message.content)
        parts.append(body if message.role == "user" else f"[{message.role}]\n{body}")
    return "\n\n".join(parts)


def truncate(text: str, limit: int = OUTPUT_LIMIT) -> tuple[str, int]:
    """``text`` cut in the middle to ``limit`` characters plus a note; returns it and the number
    of characters cut (0 when it fit)."""
    if len(text) <= limit:
        return text, 0
    half = limit // 2
    cut = len(text) - 2 * half
    note = (
        f"\n\n[... {cut:,} of {len(text):,} characters cut from the middle of this MCP result; "
        "ask the tool for less (a narrower query, a page) to see them ...]\n\n"
    )
    return text[:half] + note + text[-half:], cut


def _carries(blocks: list[Any], structured: Any) -> bool:
    """Servers SHOULD repeat structured content as JSON text; then it is not shown twice."""
    for block in blocks:
        if isinstance(block, types.TextContent):
            try:
                if json.loads(block.text) == structured:
                    return True
            except (ValueError, TypeError):
                continue
    return False


def _b64_len(data: str) -> int:
    """Decoded size of base64 text without decoding it."""
    stripped = data.rstrip("=")
    return len(stripped) * 3 // 4


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / (1024 * 1024):.1f} MB"
