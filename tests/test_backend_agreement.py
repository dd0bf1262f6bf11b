"""The policy adapter acts the same in both local backends (smoke test, real embedded model).

llama.cpp runs the Q4_1 GGUF with the adapter as a GGUF LoRA beside the weights; transformers runs the same
Q4_1 values dequantized to float32 with the adapter merged in. The weights are equal, the arithmetic is not
(8-bit activations in llama.cpp's Q4_1 products, an f16 KV cache, the LoRA unmerged), so greedy sequences
can part at a near-tie. What is checked: along llama.cpp's greedy continuation under the adapter,
transformers under the same adapter picks the same next token almost everywhere (teacher-forced top-1),
and far more often than llama.cpp without the adapter does: the adapter, not the base, decides the match.
bench/bench_backends.py reports the same rates (and exact sequence matches) on a larger prompt set.
"""

from __future__ import annotations

import pytest
import torch

from agent.runtime.base_model import embedded_gguf, load_model
from agent.runtime.local_chat import load_policy
from hypernet.gguf_io import export_gguf_lora
from hypernet.inject import apply_lora

llama_backend = pytest.importorskip("agent.runtime.llama_backend")
pytestmark = [pytest.mark.smoke, pytest.mark.usefixtures("one_thread")]
PROMPTS = ["Fix the failing test in stats.py.",
           "The test test_median_even fails: median([1, 2, 3, 4]) returns 3 instead of 2.5. Fix it.",
           "def clamp(value, low, high):",
           "Review this change: `if n > 0:` became `if n >= 0:` in mean()."]
TOKENS = 24


def greedy(chat, ids: list[int], n: int) -> list[int]:
    """llama.cpp's greedy answer: up to n tokens, ending at its end-of-text token (included)."""
    chat.llm.reset()
    chat.llm._ctx.kv_cache_clear()
    out = []
    for tok in chat.llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, reset=True):
        out.append(tok)
        if len(out) == n or tok == chat.llm.token_eos():
            return out
    return out


def teacher_forced_top1(model, ids: list[int], continuation: list[int]) -> float:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids + continuation[:-1]])).logits[0, len(ids) - 1:]
    return (logits.argmax(-1) == torch.tensor(continuation)).float().mean().item()


def test_greedy_outputs_under_the_policy_adapter_agree_between_backends(tmp_path):
    loaded = load_model("smollm2-135m-instruct")
    policy = load_policy(None, loaded)
    assert policy is not None, "the shipped policy adapter is missing"
    gguf = embedded_gguf(loaded.name)
    chat = llama_backend.LlamaChat(gguf, n_ctx=1024, n_threads=1)
    prompts = [chat.render([{"role": "user", "content": p}]) for p in PROMPTS]
    adapter = export_gguf_lora(policy, tmp_path / "policy.gguf", gguf)

    chat.set_adapters([adapter])
    with_adapter = [greedy(chat, ids, TOKENS) for ids in prompts]
    chat.set_adapters([])
    without = [greedy(chat, ids, TOKENS) for ids in prompts]
    with apply_lora(loaded.model, policy, mode="merge", base_model=loaded.name):
        agree = [teacher_forced_top1(loaded.model, ids, c) for ids, c in zip(prompts, with_adapter)]
        control = [teacher_forced_top1(loaded.model, ids, c) for ids, c in zip(prompts, without)]
    rate, control_rate = sum(agree) / len(agree), sum(control) / len(control)
    assert rate >= 0.9, (agree, control)
    assert rate - control_rate >= 0.2, (agree, control)
