"""The llama.cpp backend with the real embedded model (smoke tests): grammar-constrained replies parse, and
an adapter exported as a GGUF LoRA moves llama.cpp's next-token distribution toward transformers with the
same adapter merged in (KL falls), while the same file without the q/k row permutation does not help."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.runtime.actions import GRAMMAR_PATH, parse
from agent.runtime.base_model import embedded_gguf, load_model
from agent.runtime.loop import SYSTEM, first_message
from hypernet.gguf_io import export_gguf_lora
from hypernet.inject import apply_lora
from hypernet.lora import LoraWeights
from hypernet.targets import find_targets

llama_backend = pytest.importorskip("agent.runtime.llama_backend")
pytestmark = [pytest.mark.smoke, pytest.mark.usefixtures("one_thread")]
PROMPTS = ["Fix the failing test in stats.py.", "def clamp(value, low, high):", "List three colors."]


@pytest.fixture(scope="module")
def loaded():
    return load_model("smollm2-135m-instruct")


def test_grammar_constrained_replies_always_parse(loaded):
    chat = llama_backend.LlamaChat(embedded_gguf(loaded.name), grammar=GRAMMAR_PATH.read_text(), n_ctx=2048,
                                   max_new_tokens=96, temperature=1.0, seed=3)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": first_message("fix the failing test")}]
    for _ in range(3):  # sampled hot: the free model rarely writes an action; the grammar makes every reply one
        text, tokens = chat.chat(messages)
        assert parse(text).kind in ("bash", "read", "edit", "test", "submit"), text
        assert tokens == chat.stats.prompt_tokens + chat.stats.completion_tokens


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    lp, lq = torch.log_softmax(torch.as_tensor(p, dtype=torch.float64), -1), torch.log_softmax(
        torch.as_tensor(q, dtype=torch.float64), -1)
    return float((lp.exp() * (lp - lq)).sum())


def test_gguf_lora_moves_llama_cpp_toward_the_same_adapter_in_transformers(loaded, tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    targets = [t for t in find_targets(loaded.model, ("q_proj", "k_proj", "v_proj", "down_proj")) if t.layer % 6 == 0]
    factors = {}
    for t in targets:
        w = loaded.model.get_submodule(t.path).weight
        a = torch.randn(8, t.in_features, generator=g) / t.in_features ** 0.5
        factors[t.key] = (a, torch.randn(t.out_features, 8, generator=g) * 3 * w.std().item() / 8 ** 0.5)
    lora = LoraWeights(loaded.name, tuple(targets), factors)
    chat = llama_backend.LlamaChat(embedded_gguf(loaded.name), n_ctx=512)
    prompts = [chat.render([{"role": "user", "content": p}]) for p in PROMPTS]

    def hf() -> list[np.ndarray]:
        with torch.no_grad():
            return [loaded.model(input_ids=torch.tensor([ids])).logits[0, -1].double().numpy() for ids in prompts]

    with apply_lora(loaded.model, lora, mode="merge", base_model=loaded.name):
        want = hf()
    base = [chat.next_token_logits(ids) for ids in prompts]
    chat.set_adapters([export_gguf_lora(lora, tmp_path / "a.gguf", embedded_gguf(loaded.name))])
    with_lora = [chat.next_token_logits(ids) for ids in prompts]
    monkeypatch.setattr("hypernet.gguf_io.PERMUTED_ARCHS", set())  # what a converter without the permutation writes
    unpermuted = llama_backend.LlamaChat(embedded_gguf(loaded.name), n_ctx=512,
                                         adapters=[export_gguf_lora(lora, tmp_path / "b.gguf", embedded_gguf(loaded.name))])
    wrong = [unpermuted.next_token_logits(ids) for ids in prompts]
    kl_base = np.mean([_kl(w, b) for w, b in zip(want, base)])
    kl_lora = np.mean([_kl(w, b) for w, b in zip(want, with_lora)])
    kl_wrong = np.mean([_kl(w, b) for w, b in zip(want, wrong)])
    assert kl_lora < 0.25 * kl_base, (kl_lora, kl_base)  # what is left is the Q4 vs fp32 gap
    assert kl_wrong > 2 * kl_lora, (kl_wrong, kl_lora)


def test_a_missing_policy_adapter_is_one_line_and_exit_2(cli, tmp_path):
    from test_agent_loop import EXAMPLE

    db = tmp_path / "s.db"
    r = cli("solve", str(EXAMPLE), "fix", "--policy", str(tmp_path / "nope"), "--db", f"sqlite:///{db}")
    assert r.code == 2 and "no such folder" in r.err and r.err.strip().count("\n") == 0
