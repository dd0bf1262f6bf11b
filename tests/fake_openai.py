"""A fake OpenAI-compatible server on loopback (a real HTTP server in a thread), answering with a test's
function; optionally refusing the first requests with given HTTP statuses, and listing models."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def send_json(handler: BaseHTTPRequestHandler, status: int, data: dict) -> None:
    """One JSON answer, as an OpenAI-compatible server sends it."""
    body = json.dumps(data).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@contextmanager
def fake_openai(answer: Callable[[dict], str], *, fail_first: list[int] | None = None,
                models: list[str] | None = None, log: list[dict] | None = None) -> Iterator[tuple[str, list[dict]]]:
    """(base URL ending in /v1, the chat request bodies answered so far); `answer(body)` is the reply text.

    fail_first: statuses for the first chat requests (e.g. [429, 429]: two refusals, then answers).
    models: served model ids for GET /v1/models (None: no such route, as in a bare server).
    log: if given, every request as {"method", "path", "status", "authorization"}."""
    requests: list[dict] = []
    refusals = list(fail_first or [])
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, data: dict) -> None:
            if log is not None:
                log.append({"method": self.command, "path": self.path, "status": status,
                            "authorization": self.headers.get("Authorization")})
            send_json(self, status, data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if models is None or not self.path.endswith("/models"):
                self._send(404, {"error": {"message": f"no route {self.path}"}})
            else:
                self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in models]})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                status = refusals.pop(0) if refusals else 200
            if status != 200:
                self._send(status, {"error": {"message": f"refused with {status}", "type": "test"}})
                return
            requests.append(body | {"path": self.path})
            self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body.get("model", ""),
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": answer(body)}}],
                             "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}})

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests
    finally:
        server.shutdown()
        server.server_close()
