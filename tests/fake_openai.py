"""A fake OpenAI-compatible server on loopback (a real HTTP server in a thread), answering with a test's
function; optionally refusing the first requests with given HTTP statuses, and listing models."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def send_json(handler: BaseHTTPRequestHandler, status: int, data: dict) -> None:
    """One JSON answer, as an OpenAI-compatible server sends it."""
    body = json.dumps(data).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def completion(model: str, text: str) -> dict:
    """A chat completion answer with `text` as the reply."""
    return {"id": "x", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}}


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A loopback HTTP server in a thread; yields its base URL ending in /v1."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


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
            self._send(200, completion(body.get("model", ""), answer(body)))

        def log_message(self, *args) -> None:
            pass

    with serve(Handler) as url:
        yield url, requests


@contextmanager
def fake_vllm(answer: Callable[[dict], str], *, served: str = "base", runtime_lora: bool = True,
              max_lora_rank: int = 64, fail_unload: bool = False) -> Iterator[tuple[str, dict]]:
    """A fake of vLLM's OpenAI server with runtime LoRA updating: GET /v1/models lists the served model and
    the loaded adapters, POST /v1/load_lora_adapter and /v1/unload_lora_adapter keep them (answering as vLLM
    does: plain text on success, {"error": {...}} on a refusal), and a chat naming an unknown model is 404.

    Yields (base URL ending in /v1, state): state["loaded"] {name: path}, state["events"] [(what, name,
    adapter_config or None)], state["chats"] (request bodies). runtime_lora=False: no adapter routes (a bare
    404, as a server started without VLLM_ALLOW_RUNTIME_LORA_UPDATING)."""
    state: dict = {"loaded": {}, "events": [], "chats": []}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, data, content_type: str = "application/json") -> None:
            body = (json.dumps(data) if content_type == "application/json" else data).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str, kind: str) -> None:
            self._send(status, {"error": {"message": message, "type": kind, "param": None, "code": status}})

        def do_GET(self) -> None:  # noqa: N802
            if not self.path.endswith("/models"):
                self._send(404, {"detail": "Not Found"})
                return
            with lock:
                ids = [served, *state["loaded"]]
            self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in ids]})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            path = self.path.removeprefix("/v1")
            if path in ("/load_lora_adapter", "/unload_lora_adapter") and not runtime_lora:
                self._send(404, {"detail": "Not Found"})
                return
            name = body.get("lora_name")
            with lock:
                if path == "/load_lora_adapter":
                    folder = Path(body["lora_path"])
                    config = json.loads((folder / "adapter_config.json").read_text())
                    rank = max([config["r"], *config.get("rank_pattern", {}).values()])
                    if rank > max_lora_rank:
                        self._error(400, f"LoRA rank {rank} is greater than max_lora_rank {max_lora_rank}.",
                                    "BadRequestError")
                        return
                    state["loaded"][name] = str(folder)
                    state["events"].append(("load", name, config))
                    self._send(200, f"Success: LoRA adapter '{name}' added successfully.", "text/plain")
                    return
                if path == "/unload_lora_adapter":
                    if fail_unload:
                        self._error(500, "unload broke", "InternalServerError")
                        return
                    if state["loaded"].pop(name, None) is None:
                        self._error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
                        return
                    state["events"].append(("unload", name, None))
                    self._send(200, f"Success: LoRA adapter '{name}' removed successfully.", "text/plain")
                    return
                if body.get("model") not in (served, *state["loaded"]):
                    self._error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
                    return
                state["chats"].append(body)
                # the adapter's files must still be there while it is in use (vLLM reads them lazily)
                if body["model"] in state["loaded"]:
                    body["adapter_files_there"] = (Path(state["loaded"][body["model"]]) /
                                                   "adapter_model.safetensors").is_file()
            self._send(200, completion(body["model"], answer(body)))

        def log_message(self, *args) -> None:
            pass

    with serve(Handler) as url:
        yield url, state
