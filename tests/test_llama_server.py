"""An exported GGUF adapter on llama.cpp's OpenAI-compatible server, started here on loopback: llama-cpp-python's
`python -m llama_cpp.server --model BASE.gguf --lora_path adapter.gguf` (what `llama-server -m BASE.gguf --lora
adapter.gguf` is in the C++ build), on the embedded Q4_1 GGUF (smoke tests).

Checked is what the server computes: its next-token log-probabilities under the adapter equal in-process
llama.cpp loading the same file (same engine and weights, so equal to float noise) and differ clearly from the
base model's; and the project's endpoint client (probe, then a chat, as `agent solve --endpoint` uses it)
works against it."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
import subprocess
import sys
import time

import pytest

from agent.runtime.base_model import embedded_gguf, load_model
from hypernet.gguf_io import export_gguf_lora

llama_cpp = pytest.importorskip("llama_cpp")
pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] (the test extra) is not installed")
pytestmark = [pytest.mark.smoke, pytest.mark.usefixtures("one_thread")]
PROMPTS = ["Fix the failing test in stats.py.", "def clamp(value, low, high):"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(url, base GGUF, adapter GGUF): the server up with the adapter, stopped after the module."""
    from test_llama_backend import _random_lora

    loaded = load_model("smollm2-135m-instruct")
    base = embedded_gguf(loaded.name)
    adapter = export_gguf_lora(_random_lora(loaded), tmp_path_factory.mktemp("gguf") / "adapter.gguf", base)
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(base), "--lora_path",
                                 str(adapter), "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "512",
                                 "--n_threads", "2"], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server not up in 120 s: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url, base, adapter
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def top_logprobs(completion) -> dict[str, float]:
    return dict(completion["choices"][0]["logprobs"]["top_logprobs"][0])


def test_the_server_applies_the_exported_adapter_as_llama_cpp_does_in_process(served):
    from openai import OpenAI

    url, base, adapter = served
    client = OpenAI(base_url=url, api_key="none")
    local = llama_cpp.Llama(model_path=str(base), lora_path=str(adapter), n_ctx=512, n_threads=2, logits_all=True,
                            verbose=False)
    bare = llama_cpp.Llama(model_path=str(base), n_ctx=512, n_threads=2, logits_all=True, verbose=False)
    moved = 0.0
    for prompt in PROMPTS:
        got = client.completions.create(model="any", prompt=prompt, max_tokens=1, temperature=0, logprobs=10)
        remote = dict(got.choices[0].logprobs.top_logprobs[0])
        want = top_logprobs(local.create_completion(prompt, max_tokens=1, temperature=0, logprobs=10))
        without = top_logprobs(bare.create_completion(prompt, max_tokens=1, temperature=0, logprobs=10))
        assert remote.keys() == want.keys(), (prompt, remote, want)
        assert max(abs(remote[k] - want[k]) for k in want) < 1e-2, (prompt, remote, want)
        moved = max(moved, max(abs(want[k] - without.get(k, -100.0)) for k in want))
    assert moved > 0.1  # the adapter, not the base, is what agrees


def test_the_endpoint_client_probes_and_chats_with_the_server(served):
    from agent.runtime.endpoint import EndpointChat

    url, _, _ = served
    chat = EndpointChat(url, "smollm2", max_tokens=16)
    chat.probe()  # llama.cpp's server lists one name and serves any: the probe falls back to a one-token chat
    text, tokens = chat.chat([{"role": "user", "content": "Name one prime number."}])
    assert text.strip() and tokens > 0
