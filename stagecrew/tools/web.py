"""webfetch: read a web page (docs, an issue, an API answer) as text the model can use.

Bounded on every axis (bytes read, seconds spent, characters returned) because a page is
untrusted input. Proxies follow the *user's* environment only: ``trust_env=False`` stops httpx
from picking up the proxy the stagecrew runtime injected for Ray, and ``tool_subprocess_env``
tells us what the user had configured before that.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from pydantic import BaseModel, Field

if TYPE_CHECKING:  # imported when a fetch runs: httpx is ~8 MiB every agent need not carry
    import httpx

from stagecrew.tools.base import Tool, ToolContext, ToolResult
from stagecrew.tools.shell import tool_subprocess_env

DEFAULT_MAX_BYTES = 2_000_000
DEFAULT_TIMEOUT = 30.0
TEXT_LIMIT = 60_000
USER_AGENT = "stagecrew-webfetch/0.1 (terminal coding agent)"
_TEXT_MIMES = {
    "application/json",
    "application/xml",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "application/yaml",
    "application/x-yaml",
    "application/toml",
    "application/x-sh",
    "application/x-ndjson",
    "application/xhtml+xml",
    "application/sql",
    "application/graphql",
}
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


# --------------------------------------------------------------------------------------------
# HTML -> text


class HTMLToText(HTMLParser):
    """Readable text from HTML: scripts and styles dropped, headings as '#', links as
    [text](url), lists as '-'/'1.', tables as 'a | b', <pre> kept verbatim."""

    SKIP = frozenset({"script", "style", "noscript", "template", "svg", "iframe", "object"})
    BLOCK = frozenset(
        {
            "p",
            "div",
            "section",
            "article",
            "header",
            "footer",
            "main",
            "nav",
            "aside",
            "form",
            "table",
            "blockquote",
            "figure",
            "figcaption",
            "address",
            "dl",
            "dt",
            "dd",
            "details",
            "summary",
            "hr",
            "body",
        }
    )
    HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}

    def __init__(self, base_url: str = "") -> None:
        super().__init__(convert_charrefs=True)
        self.base_url = base_url
        self.out: list[str] = []
        self.skip = 0
        self.pre = 0
        self.in_title = False
        self.title = ""
        self.lists: list[list[Any]] = []  # [kind, counter]
        self.links: list[tuple[str | None, int]] = []
        self.cells_in_row = 0

    # helpers
    def _tail(self) -> str:
        for piece in reversed(self.out):
            if piece:
                return piece
        return "\n"

    def _newline(self, blank: bool = False) -> None:
        tail = self._tail()
        if blank:
            if not tail.endswith("\n\n"):
                self.out.append("\n" if tail.endswith("\n") else "\n\n")
        elif not tail.endswith("\n"):
            self.out.append("\n")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skip += 1
            return
        if self.skip:
            return
        attr = dict(attrs)
        if tag == "title":
            self.in_title = True
        elif tag in self.HEADINGS:
            self._newline(blank=True)
            self.out.append("#" * self.HEADINGS[tag] + " ")
        elif tag == "br":
            self.out.append("\n")
        elif tag in ("ul", "ol"):
            self._newline(blank=not self.lists)
            self.lists.append([tag, 0])
        elif tag == "li":
            self._newline()
            indent = "  " * max(0, len(self.lists) - 1)
            if self.lists and self.lists[-1][0] == "ol":
                self.lists[-1][1] += 1
                self.out.append(f"{indent}{self.lists[-1][1]}. ")
            else:
                self.out.append(f"{indent}- ")
        elif tag == "a":
            self.links.append((attr.get("href"), len(self.out)))
        elif tag == "pre":
            self._newline(blank=True)
            self.out.append("```\n")
            self.pre += 1
        elif tag == "code" and not self.pre:
            self.out.append("`")
        elif tag == "img":
            alt = (attr.get("alt") or "").strip()
            if alt:
                self.out.append(f"[image: {alt}]")
        elif tag == "tr":
            self._newline()
            self.cells_in_row = 0
        elif tag in ("td", "th"):
            if self.cells_in_row:
                self.out.append(" | ")
            self.cells_in_row += 1
        elif tag in self.BLOCK:
            self._newline(blank=True)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
            return
        if self.skip:
            return
        if tag == "title":
            self.in_title = False
        elif tag in self.HEADINGS or tag in self.BLOCK:
            self._newline(blank=True)
        elif tag in ("ul", "ol"):
            if self.lists:
                self.lists.pop()
            self._newline(blank=not self.lists)
        elif tag == "a" and self.links:
            href, start = self.links.pop()
            text = "".join(self.out[start:]).strip()
            if href and text and not href.startswith(("javascript:", "#", "mailto:")):
                self.out[start:] = [f"[{text}]({urljoin(self.base_url, href)})"]
        elif tag == "pre" and self.pre:
            self.pre -= 1
            self._newline()
            self.out.append("```")
            self._newline(blank=True)
        elif tag == "code" and not self.pre:
            self.out.append("`")
        elif tag == "tr":
            self._newline()

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.in_title:
            self.title += data
            return
        if self.pre:
            self.out.append(data)
            return
        text = re.sub(r"\s+", " ", data)
        if self._tail().endswith(("\n", " ", "# ", "- ", ". ")):
            text = text.lstrip()
        if text:
            self.out.append(text)

    def text(self) -> str:
        raw = "".join(self.out)
        lines = [line.rstrip() for line in raw.split("\n")]
        cleaned = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
        return cleaned


def html_to_text(html: str, base_url: str = "") -> tuple[str, str]:
    """(title, text) of an HTML document."""
    parser = HTMLToText(base_url)
    parser.feed(html)
    parser.close()
    return re.sub(r"\s+", " ", parser.title).strip(), parser.text()


# --------------------------------------------------------------------------------------------
# Proxies


def _env_get(env: dict[str, str], *names: str) -> str | None:
    for name in names:
        for key in (name.upper(), name.lower()):
            value = env.get(key)
            if value:
                return value
    return None


def proxy_mounts(env: dict[str, str]) -> dict[str, httpx.AsyncHTTPTransport | None]:
    """httpx mounts for the proxies in ``env`` (the user's), honouring NO_PROXY like httpx's own
    environment handling. Loopback is always direct: a local dev server is never behind one."""
    import httpx

    mounts: dict[str, httpx.AsyncHTTPTransport | None] = {}
    no_proxy = _env_get(env, "no_proxy") or ""
    hosts = [h.strip() for h in no_proxy.split(",") if h.strip()]
    if "*" in hosts:
        return mounts
    for scheme in ("http", "https"):
        proxy = _env_get(env, f"{scheme}_proxy", "all_proxy")
        if proxy:
            if "://" not in proxy:
                proxy = "http://" + proxy
            mounts[f"{scheme}://"] = httpx.AsyncHTTPTransport(proxy=proxy)
    if not mounts:
        return mounts
    for host in [*hosts, *_LOOPBACK]:
        if "/" in host and "://" not in host:
            continue  # CIDR ranges: httpx patterns cannot express them
        if "://" in host:
            mounts[host] = None
            continue
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None:
            mounts[f"all://[{host}]" if ip.version == 6 else f"all://{host}"] = None
        elif host.lower() == "localhost":
            mounts[f"all://{host}"] = None
        else:
            mounts[f"all://*{host}"] = None
    return mounts


# --------------------------------------------------------------------------------------------
# Fetching


def _is_text(mime: str) -> bool:
    return (
        mime.startswith("text/") or mime in _TEXT_MIMES or mime.endswith(("+json", "+xml", "+yaml"))
    )


def _charset(resp: httpx.Response, head: bytes) -> str:
    if resp.charset_encoding:
        return resp.charset_encoding
    m = re.search(rb"""<meta[^>]+charset=["']?([A-Za-z0-9_-]+)""", head[:4096], re.IGNORECASE)
    if m:
        return m.group(1).decode("ascii")
    return "utf-8"


def _decode(data: bytes, charset: str) -> str:
    try:
        return data.decode(charset, errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


class WebFetchArgs(BaseModel):
    url: str = Field(description="The http:// or https:// URL to fetch.")
    prompt: str | None = Field(
        default=None,
        description="What you want from the page; it is repeated above the page text.",
    )
    max_bytes: int = Field(
        default=DEFAULT_MAX_BYTES,
        ge=1,
        le=10_000_000,
        description="Stop downloading after this many bytes.",
    )
    timeout: float = Field(
        default=DEFAULT_TIMEOUT, gt=0, le=120, description="Give up after this many seconds."
    )


def _error(message: str) -> ToolResult:
    return ToolResult(content=message, is_error=True)


async def fetch(args: WebFetchArgs, ctx: ToolContext) -> ToolResult:
    import httpx

    url = args.url.strip()
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises for a port out of range
        httpx.URL(url)  # raises for hosts httpx cannot encode
    except (ValueError, httpx.InvalidURL) as exc:
        return _error(f"{url!r} is not a valid URL: {exc}")
    if parts.scheme not in ("http", "https"):
        return _error(f"webfetch only fetches http:// and https:// URLs, not {url!r}")
    if not parts.hostname:
        return _error(f"{url!r} has no host name")
    try:
        mounts = proxy_mounts(tool_subprocess_env(ctx.env, ctx.hidden_env))
    except (ValueError, httpx.InvalidURL) as exc:
        return _error(f"the proxy configured in the environment is not usable: {exc}")
    client = httpx.AsyncClient(
        trust_env=False,
        mounts=mounts,
        follow_redirects=True,
        max_redirects=10,
        timeout=httpx.Timeout(args.timeout),
        headers={
            "User-Agent": USER_AGENT,
            "Accept": "text/html,application/xhtml+xml,text/plain,application/json;q=0.9,*/*;q=0.5",
        },
    )
    truncated = False
    try:
        async with asyncio.timeout(args.timeout), client.stream("GET", url) as resp:
            final = str(resp.url)
            mime = resp.headers.get("content-type", "").split(";")[0].strip().lower()
            if resp.status_code >= 400:
                excerpt = ""
                if _is_text(mime) or not mime:
                    body = b""
                    async for chunk in resp.aiter_bytes():
                        body += chunk
                        if len(body) > 4096:
                            break
                    excerpt = _decode(body[:4096], _charset(resp, body))
                    if mime == "text/html" or "<html" in excerpt[:200].lower():
                        excerpt = html_to_text(excerpt, final)[1]
                    excerpt = excerpt.strip()[:300]
                reason = resp.reason_phrase or ""
                return _error(
                    f"HTTP {resp.status_code} {reason} for {final}"
                    + (f": {excerpt}" if excerpt else "")
                )
            if mime and not _is_text(mime):
                size = resp.headers.get("content-length")
                return _error(
                    f"{final} returned non-text content ({mime}"
                    f"{', ' + size + ' bytes' if size else ''}); webfetch only reads HTML, "
                    "text and JSON"
                )
            data = bytearray()
            async for chunk in resp.aiter_bytes():
                data += chunk
                if len(data) > args.max_bytes:
                    truncated = True
                    del data[args.max_bytes :]
                    break
    except TimeoutError:
        return _error(f"timed out after {args.timeout:g} s fetching {url}")
    except httpx.TimeoutException:
        return _error(f"timed out after {args.timeout:g} s fetching {url}")
    except httpx.ConnectError as exc:
        return _error(f"could not connect to {url}: {exc or 'connection failed'}")
    except httpx.TooManyRedirects:
        return _error(f"too many redirects fetching {url}")
    except (httpx.HTTPError, httpx.InvalidURL, ValueError, UnicodeError) as exc:
        return _error(f"fetching {url} failed: {type(exc).__name__}: {exc}")
    finally:
        await client.aclose()
    raw = bytes(data)
    if not mime and b"\x00" in raw[:1024]:
        return _error(f"{final} returned binary content; webfetch only reads HTML, text and JSON")
    text = _decode(raw, _charset(resp, raw))
    title = ""
    is_html = mime in ("text/html", "application/xhtml+xml") or (
        not mime and "<html" in text[:1000].lower()
    )
    if is_html:
        title, text = html_to_text(text, final)
    header = [f"URL: {final}" + (f" (redirected from {url})" if final != url else "")]
    header.append(f"Content-Type: {mime or 'unknown'}")
    if title:
        header.append(f"Title: {title}")
    if args.prompt:
        header.append(f"Looking for: {args.prompt}")
    notes: list[str] = []
    if truncated:
        notes.append(f"[download stopped at {args.max_bytes:,} bytes: the page is longer]")
    if len(text) > TEXT_LIMIT:
        notes.append(f"[text cut at {TEXT_LIMIT:,} of {len(text):,} characters]")
        text = text[:TEXT_LIMIT]
    content = "\n".join(header) + "\n\n" + (text or "(empty page)")
    if notes:
        content += "\n\n" + "\n".join(notes)
    return ToolResult(
        content=content,
        metadata={
            "url": final,
            "status": resp.status_code,
            "content_type": mime,
            "bytes": len(raw),
            "truncated": truncated,
        },
    )


class WebFetch(Tool):
    name = "webfetch"
    description = (
        "Fetch a URL (http/https only) and return its content as text: HTML is converted to "
        "readable text (headings, lists, [text](links)); JSON and plain text come back as is. "
        f"Downloads at most max_bytes (default {DEFAULT_MAX_BYTES:,}) and gives up after "
        f"timeout seconds (default {DEFAULT_TIMEOUT:g}); returns at most {TEXT_LIMIT:,} "
        "characters. HTTP errors, timeouts and non-text content (images, PDFs, archives) are "
        "reported as errors. prompt (optional) says what you are looking for and is shown "
        "with the result. Read-only: never use it to submit forms or call APIs that change "
        "things."
    )
    Args = WebFetchArgs
    read_only = True

    async def run(self, args: WebFetchArgs, ctx: ToolContext) -> ToolResult:
        return await fetch(args, ctx)
