"""webfetch against a real HTTP server on 127.0.0.1 (no other network)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from stagecrew.envutil import INJECTED_ENV_VAR
from stagecrew.tools import web
from stagecrew.tools.base import ToolContext, ToolResult, execute
from stagecrew.tools.registry import default_tools

TOOLS = default_tools()
STOP = threading.Event()

PAGE = b"""<!doctype html><html><head><title>Test  Page</title>
<style>body { color: red }</style><script>var secret = "do not show";</script></head>
<body><nav><a href="/">Home</a></nav>
<h1>Main heading</h1>
<p>First   paragraph with <a href="/docs/intro.html">a link</a> and <code>code()</code>.</p>
<h2>List</h2>
<ul><li>one</li><li>two<ul><li>nested</li></ul></li></ul>
<ol><li>first</li><li>second</li></ol>
<pre>def f():
    return 1</pre>
<table><tr><th>k</th><th>v</th></tr><tr><td>a</td><td>1</td></tr></table>
<p>Caf&eacute; &amp; more</p>
</body></html>"""


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _send(self, code: int, ctype: str, body: bytes, extra: dict[str, str] | None = None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path
        if path.startswith("http://"):  # we are being used as a proxy
            self._send(200, "text/plain", f"via proxy: {path}".encode())
        elif path == "/page.html":
            self._send(200, "text/html; charset=utf-8", PAGE)
        elif path == "/data.json":
            self._send(200, "application/json", json.dumps({"a": [1, 2]}).encode())
        elif path == "/plain.txt":
            self._send(200, "text/plain; charset=utf-8", "héllo\nworld\n".encode())
        elif path == "/missing":
            self._send(404, "text/html", b"<html><body><h1>Nope, not here</h1></body></html>")
        elif path == "/image.png":
            self._send(200, "image/png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
        elif path == "/redirect":
            self._send(302, "text/plain", b"", {"Location": "/plain.txt"})
        elif path.startswith("/big"):
            size = int(path.split("=")[1])
            self._send(200, "text/plain", b"x" * size)
        elif path == "/slow":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not STOP.is_set():
                time.sleep(0.05)
        else:
            self._send(500, "text/plain", b"unexpected")


@pytest.fixture
def server() -> Iterator[str]:
    STOP.clear()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    STOP.set()
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture
def ctx(tmp_path: Any) -> ToolContext:
    return ToolContext(workspace=tmp_path, env={"PATH": "/usr/bin:/bin"})


async def fetch(ctx: ToolContext, url: str, **kw: Any) -> ToolResult:
    return await execute(TOOLS, "webfetch", {"url": url, **kw}, ctx)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_html_becomes_readable_text(server: str, ctx: ToolContext) -> None:
    r = await fetch(ctx, f"{server}/page.html", prompt="the list items")
    assert not r.is_error, r.content
    text = r.content
    assert "Title: Test Page" in text and "Looking for: the list items" in text
    assert "do not show" not in text and "color: red" not in text
    assert "# Main heading" in text and "## List" in text
    assert f"[a link]({server}/docs/intro.html)" in text
    assert "First paragraph with" in text and "`code()`" in text
    assert "- one\n- two\n  - nested" in text
    assert "1. first\n2. second" in text
    assert "```\ndef f():\n    return 1\n```" in text
    assert "k | v\na | 1" in text
    assert "Café & more" in text
    assert r.metadata["status"] == 200


async def test_json_and_plain_pass_through(server: str, ctx: ToolContext) -> None:
    r = await fetch(ctx, f"{server}/data.json")
    assert r.content.endswith('{"a": [1, 2]}') and "Content-Type: application/json" in r.content
    r = await fetch(ctx, f"{server}/redirect")
    assert r.content.endswith("héllo\nworld\n")
    assert f"URL: {server}/plain.txt (redirected from {server}/redirect)" in r.content


async def test_http_errors_name_url_and_status(server: str, ctx: ToolContext) -> None:
    r = await fetch(ctx, f"{server}/missing")
    assert r.is_error
    assert r.content.startswith(f"HTTP 404 Not Found for {server}/missing")
    assert "Nope, not here" in r.content
    r = await fetch(ctx, f"{server}/image.png")
    assert r.is_error and "non-text content (image/png" in r.content and "/image.png" in r.content


async def test_connection_refused(ctx: ToolContext) -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    r = await fetch(ctx, url)
    assert r.is_error and r.content.startswith(f"could not connect to {url}")


async def test_timeout(server: str, ctx: ToolContext) -> None:
    start = time.monotonic()
    r = await fetch(ctx, f"{server}/slow", timeout=0.3)
    assert r.is_error and "timed out after 0.3 s" in r.content and "/slow" in r.content
    assert time.monotonic() - start < 3


async def test_size_cap(server: str, ctx: ToolContext) -> None:
    r = await fetch(ctx, f"{server}/big?n=5000", max_bytes=1000)
    assert not r.is_error
    assert "download stopped at 1,000 bytes" in r.content
    assert r.metadata["bytes"] == 1000 and r.metadata["truncated"]
    r = await fetch(ctx, f"{server}/big?n=2100000")
    assert "download stopped at 2,000,000 bytes" in r.content
    assert f"text cut at {web.TEXT_LIMIT:,}" in r.content


async def test_bad_urls(ctx: ToolContext) -> None:
    for url in ("file:///etc/passwd", "ftp://x/y", "not a url"):
        r = await fetch(ctx, url)
        assert r.is_error and "only fetches http:// and https://" in r.content
    for url in ("http://[bad", "http://127.0.0.1:99999/", "http://\u2603.invalid/"):
        r = await fetch(ctx, url)
        assert r.is_error and "is not a valid URL" in r.content, url
    r = await fetch(ctx, "https://")
    assert r.is_error and "no host name" in r.content


async def test_user_proxy_is_used(server: str, ctx: ToolContext) -> None:
    """example.invalid never resolves: only a proxy can answer for it."""
    ctx.env = {"HTTP_PROXY": server}
    r = await fetch(ctx, "http://example.invalid/doc")
    assert not r.is_error, r.content
    assert "via proxy: http://example.invalid/doc" in r.content


async def test_injected_proxy_is_replaced_by_users(server: str, ctx: ToolContext) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    ctx.env = {"HTTP_PROXY": dead, INJECTED_ENV_VAR: json.dumps({"HTTP_PROXY": server})}
    r = await fetch(ctx, "http://example.invalid/doc")
    assert not r.is_error, r.content
    assert "via proxy: http://example.invalid/doc" in r.content


def test_proxy_mounts_honour_no_proxy_and_injection() -> None:
    from stagecrew.tools.shell import tool_subprocess_env

    injected = {"HTTPS_PROXY": "http://ray:1", INJECTED_ENV_VAR: json.dumps({"HTTPS_PROXY": None})}
    assert web.proxy_mounts(tool_subprocess_env(injected)) == {}
    mounts = web.proxy_mounts({"https_proxy": "proxy:3128", "NO_PROXY": ".corp, 10.0.0.1"})
    assert "https://" in mounts and "http://" not in mounts
    assert mounts["all://*.corp"] is None and mounts["all://10.0.0.1"] is None
    assert mounts["all://127.0.0.1"] is None and mounts["all://localhost"] is None
    assert web.proxy_mounts({"HTTP_PROXY": "http://p:1", "NO_PROXY": "*"}) == {}


def test_html_to_text_edge_cases() -> None:
    title, text = web.html_to_text("<p>unclosed <b>bold<script>x = 1")
    assert text == "unclosed bold" and title == ""
    _, text = web.html_to_text('<a href="javascript:void(0)">click</a> <a href="#top">top</a>')
    assert text == "click top"
