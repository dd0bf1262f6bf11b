"""An OpenAI-compatible chat endpoint (vLLM, llama.cpp's server, OpenAI, ...) through the `openai` SDK.

The SDK retries 408/409/429/5xx answers, dropped connections and timeouts with exponential backoff and
jitter (honouring Retry-After), so one rate-limit answer does not end a solve, an evaluation or a synth
run. Every failure that is left after the retries is one EndpointError line. No torch here: commands that
only talk to an endpoint (the judge, the teacher) need not import it.
"""

from __future__ import annotations

import os

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
RETRIES = 4  # waits of ~0.5, 1, 2, 4 s (less jitter) before giving up on a 429/5xx/timeout
PROBE_TIMEOUT = 10.0


class EndpointError(ValueError):
    """An endpoint that cannot be reached or answers with an error (one line for the user)."""


def base_url(url: str) -> str:
    """The SDK's base URL: the one given, without a trailing /chat/completions (accepted for convenience)."""
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise EndpointError(f"endpoint {url!r} must be an http(s) URL, e.g. http://127.0.0.1:8000/v1")
    return url.removesuffix("/chat/completions").rstrip("/")


class EndpointChat:
    """Chat at an OpenAI-compatible endpoint; skills can only go in context here.

    Replies are free text: they go through the loop's parse + format-error path (no grammar is sent, since
    servers spell it differently, e.g. llama.cpp's `grammar` and vLLM's guided decoding, and others
    reject unknown fields)."""

    def __init__(self, url: str, model: str, key_env: str = DEFAULT_KEY_ENV, timeout: float = 120.0,
                 max_tokens: int = 512, retries: int = RETRIES) -> None:
        from openai import OpenAI

        self.url = base_url(url)
        if not model:
            raise EndpointError(f"endpoint {self.url}: no model name (--endpoint-model)")
        key = os.environ.get(key_env or DEFAULT_KEY_ENV, "")
        if not key and key_env and key_env != DEFAULT_KEY_ENV:
            # a named variable that is unset is a mistake; the default one may be unset for local servers
            raise EndpointError(f"--endpoint-key-env {key_env}: that environment variable is not set")
        self.model = model
        self.timeout = timeout
        self.max_tokens = max_tokens
        # local servers take any key; the SDK insists on one
        self.client = OpenAI(base_url=self.url, api_key=key or "none", max_retries=retries, timeout=timeout)

    def probe(self) -> None:
        """Fail fast (EndpointError) before a run sets anything up: list the served models (an unreachable
        server or a refused key ends here, after one retry); when the server has no usable model list, or does
        not list this model (llama.cpp's server serves any name), ask for a one-token reply, which is what
        catches a wrong model name on vLLM or OpenAI."""
        import openai

        quick = self.client.with_options(max_retries=1, timeout=min(self.timeout, PROBE_TIMEOUT))
        try:
            served = {m.id for m in quick.models.list()}
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.APIConnectionError) as exc:
            raise self._error(exc) from None
        except openai.OpenAIError:  # no (usable) model list here: the chat below decides
            served = set()
        if self.model not in served:
            self.chat([{"role": "user", "content": "Reply with OK."}], max_tokens=1)

    def chat(self, messages: list[dict[str, str]], max_tokens: int | None = None) -> tuple[str, int]:
        import openai

        try:
            reply = self.client.chat.completions.create(model=self.model, messages=messages, temperature=0,
                                                        max_tokens=max_tokens or self.max_tokens)
        except openai.OpenAIError as exc:
            raise self._error(exc) from None
        choices = getattr(reply, "choices", None)
        if not choices or getattr(choices[0], "message", None) is None:
            raise EndpointError(f"endpoint {self.url} answered without choices[0].message")
        usage = getattr(reply, "usage", None)
        return choices[0].message.content or "", int(getattr(usage, "total_tokens", 0) or 0)

    def _error(self, exc: Exception) -> EndpointError:
        import openai

        if isinstance(exc, openai.APITimeoutError):
            return EndpointError(f"endpoint {self.url} did not answer within {self.timeout:g} s "
                                 f"(tried {self.client.max_retries + 1} times)")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return EndpointError(f"endpoint {self.url} unreachable: {_one_line(str(cause) or type(cause).__name__)}")
        if isinstance(exc, openai.APIStatusError):
            return EndpointError(f"endpoint {self.url} answered HTTP {exc.status_code}: {_one_line(_detail(exc))}")
        if isinstance(exc, openai.APIResponseValidationError):
            return EndpointError(f"endpoint {self.url} answered something that is not an OpenAI chat reply")
        return EndpointError(f"endpoint {self.url}: {_one_line(str(exc))}")


def _detail(exc) -> str:
    """The server's own message where it gave one ({"error": {"message": ...}} or {"detail": ...})."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return str(inner.get("message") or inner.get("detail") or body)
        return str(inner)
    return str(body or exc.message)


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
