"""A one-purpose chat-completions endpoint on 127.0.0.1 for warming the gateway up.

litellm and the OpenAI SDK build their async clients, connection pools and stream parsers on
the first real call (about 0.3 s). The gateway makes that call at start, against this server,
so the first session does not pay it. It answers every POST with the same streamed tool call
and knows nothing else — the scripted model server in ``stagecrew.testing`` is for tests and
stays out of production code.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

_CHUNKS = [
    {
        "choices": [
            {
                "index": 0,
                "delta": {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_warm_up",
                            "type": "function",
                            "function": {"name": "noop", "arguments": '{"x": 1}'},
                        }
                    ],
                },
            }
        ]
    },
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}},
]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"".join(
            b"data: "
            + json.dumps({"id": "warm-up", "object": "chat.completion.chunk", **c}).encode()
            + b"\n\n"
            for c in _CHUNKS
        )
        body += b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


class WarmUpServer:
    """``with WarmUpServer() as server: ... server.base_url``"""

    def __init__(self) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> WarmUpServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
