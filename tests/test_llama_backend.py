"""The llama.cpp backend with the real embedded model (smoke tests): grammar-constrained replies parse, and
an adapter exported as a GGUF LoRA moves llama.cpp's next-token distribution toward transformers with the
same adapter merged in (KL falls), while the same file without the q/k row permutation does not help."""

from __future__ import annotations

import json

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
llama_cpp = pytest.importorskip("llama_cpp")
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


def test_under_the_grammar_a_reply_is_never_cut_at_the_token_cap(loaded):
    """A cut reply cannot parse (its block is open), so the grammar's own bounds end a reply, not the cap."""
    chat = llama_backend.LlamaChat(embedded_gguf(loaded.name), grammar=GRAMMAR_PATH.read_text(), n_ctx=2048,
                                   max_new_tokens=3)  # no action fits in 3 tokens
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": first_message("fix the failing test")}]
    text, _ = chat.chat(messages)
    assert parse(text).kind in ("bash", "read", "edit", "test", "submit"), text
    assert chat.stats.completion_tokens > 3


def test_a_reply_the_contexts_end_cuts_is_tried_again_with_room(loaded):
    """A long trajectory fills the context up to max_new_tokens; a reply cut there by the context's end is tried
    again with the prompt cut for more room, so it still parses (a degenerate edit cut this way at 256 tokens
    was the K = 8 benchmark's format errors)."""
    chat = llama_backend.LlamaChat(embedded_gguf(loaded.name), grammar=GRAMMAR_PATH.read_text(), n_ctx=1024,
                                   max_new_tokens=3)
    log = "\n".join(f"{k:4d} | total = total + value  # step {k}" for k in range(200))  # one huge message
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": first_message("fix the failing test")},
                {"role": "assistant", "content": "Read it.\n```read\nstats.py\n```"}, {"role": "user", "content": log}]
    assert len(chat.prompt_tokens(messages)) == 1024 - 3  # the first try has room for 3 tokens only
    text, spent = chat.chat(messages)
    assert parse(text).kind in ("bash", "read", "edit", "test", "submit"), text
    assert chat.stats.prompt_tokens == 1024 - 512  # the second try: half the context kept free
    assert spent == 1024 - 3 + 3 + chat.stats.prompt_tokens + chat.stats.completion_tokens  # both tries counted


def test_a_resample_samples_and_leaves_the_chat_greedy(loaded):
    chat = llama_backend.LlamaChat(embedded_gguf(loaded.name), grammar=GRAMMAR_PATH.read_text(), n_ctx=2048,
                                   max_new_tokens=64)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": first_message("fix the failing test")}]
    greedy = chat.chat(messages)[0]
    samples = {chat.sample(messages, k)[0] for k in range(1, 5)}
    assert all(parse(t) for t in samples) and samples != {greedy}  # sampled, each a valid action
    assert (chat.temperature, chat.seed) == (0.0, 0) and chat.chat(messages)[0] == greedy  # greedy again after


def test_each_sampled_turn_draws_anew_and_an_attempt_replays_from_its_seed(loaded):
    """A sampled attempt's turns each draw from their own seed: the same prompt twice gets two replies (one seed
    for every turn replayed the same random stream, a refused edit came back word for word), and a fresh chat
    with the same seed replays the same replies (an attempt is reproducible)."""
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": first_message("fix the failing test")}]

    def replies(seed: int) -> list[str]:
        chat = llama_backend.LlamaChat(embedded_gguf(loaded.name), grammar=GRAMMAR_PATH.read_text(), n_ctx=2048,
                                       max_new_tokens=64, temperature=0.7, seed=seed)
        return [chat.chat(messages)[0] for _ in range(3)]

    first = replies(1)
    assert len(set(first)) == 3, first  # one seed every turn: the 2nd and 3rd were the same (KV cache warm)
    assert replies(1) == first
    seeds = {llama_backend.draw_seed(s, n) for s in range(8) for n in range(200)}
    assert len(seeds) == 8 * 200  # no attempt's turn shares a seed with another's


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    lp, lq = torch.log_softmax(torch.as_tensor(p, dtype=torch.float64), -1), torch.log_softmax(
        torch.as_tensor(q, dtype=torch.float64), -1)
    return float((lp.exp() * (lp - lq)).sum())


def _random_lora(loaded) -> LoraWeights:
    """Rank 8 on q/k/v/down of every 6th layer, large enough to move the next-token distribution clearly."""
    g = torch.Generator().manual_seed(0)
    targets = [t for t in find_targets(loaded.model, ("q_proj", "k_proj", "v_proj", "down_proj")) if t.layer % 6 == 0]
    factors = {}
    for t in targets:
        w = loaded.model.get_submodule(t.path).weight
        a = torch.randn(8, t.in_features, generator=g) / t.in_features ** 0.5
        factors[t.key] = (a, torch.randn(t.out_features, 8, generator=g) * 3 * w.std().item() / 8 ** 0.5)
    return LoraWeights(loaded.name, tuple(targets), factors)


def _injected_logits(loaded, lora: LoraWeights, prompts: list[list[int]]) -> list[np.ndarray]:
    """The project's own injection (transformers, adapter merged in) on the same tokens llama.cpp gets."""
    with torch.no_grad(), apply_lora(loaded.model, lora, mode="merge", base_model=loaded.name):
        return [loaded.model(input_ids=torch.tensor([ids])).logits[0, -1].double().numpy() for ids in prompts]


def test_gguf_lora_moves_llama_cpp_toward_the_same_adapter_in_transformers(loaded, tmp_path, monkeypatch):
    lora = _random_lora(loaded)
    chat = llama_backend.LlamaChat(embedded_gguf(loaded.name), n_ctx=512)
    prompts = [chat.render([{"role": "user", "content": p}]) for p in PROMPTS]
    want = _injected_logits(loaded, lora, prompts)
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


def test_an_adapter_merged_into_the_gguf_acts_as_the_runtime_lora_and_leaves_the_rest(loaded, tmp_path):
    """write_merged_gguf: the target weights carry ΔW (q8_0 keeps it: llama.cpp's next token moves toward the
    injected adapter as far as with the runtime LoRA; the base's own q4_1 rounds much of it away), every other
    tensor is the base's, byte for byte, and a bad type is refused before anything is written."""
    from gguf import GGUFReader

    from hypernet.gguf_io import GGUF_NAMES, GGUFLoraError, from_lora_weights, write_merged_gguf

    lora, base_gguf = _random_lora(loaded), embedded_gguf(loaded.name)
    chat = llama_backend.LlamaChat(base_gguf, n_ctx=512)
    prompts = [chat.render([{"role": "user", "content": p}]) for p in PROMPTS]
    want = _injected_logits(loaded, lora, prompts)
    kl = {"base": np.mean([_kl(w, chat.next_token_logits(ids)) for w, ids in zip(want, prompts)])}
    chat.set_adapters([export_gguf_lora(lora, tmp_path / "a.gguf", base_gguf)])
    kl["runtime"] = np.mean([_kl(w, chat.next_token_logits(ids)) for w, ids in zip(want, prompts)])
    for qtype in ("q8_0", "q4_1"):
        merged = write_merged_gguf(tmp_path / f"m.{qtype}.gguf", from_lora_weights(lora), base_gguf, qtype=qtype)
        mchat = llama_backend.LlamaChat(merged, n_ctx=512)
        kl[qtype] = np.mean([_kl(w, mchat.next_token_logits(ids)) for w, ids in zip(want, prompts)])
    assert kl["q8_0"] < 1.5 * kl["runtime"] and kl["q8_0"] < 0.25 * kl["base"], kl
    assert kl["q4_1"] > kl["q8_0"], kl
    changed = {f"blk.{t.layer}.{GGUF_NAMES[t.module]}.weight" for t in lora.targets}
    old, new = GGUFReader(str(base_gguf)), GGUFReader(str(tmp_path / "m.q8_0.gguf"))
    assert [t.name for t in old.tensors] == [t.name for t in new.tensors]
    for a, b in zip(old.tensors, new.tensors):
        if a.name in changed:
            assert b.tensor_type.name == "Q8_0" and bytes(a.data) != bytes(b.data), a.name
        else:
            assert a.tensor_type == b.tensor_type and bytes(a.data) == bytes(b.data), a.name
    assert {f: old.fields[f].contents() for f in old.fields if not f.startswith("GGUF.")} == \
        {f: new.fields[f].contents() for f in new.fields if not f.startswith("GGUF.")}
    with pytest.raises(GGUFLoraError, match="qtype must be one of"):
        write_merged_gguf(tmp_path / "x.gguf", from_lora_weights(lora), base_gguf, qtype="q2_k")
    assert not list(tmp_path.glob("*x.gguf*"))


def test_cli_gguf_export_moves_llama_cpp_toward_the_injected_adapter(loaded, cli, tmp_path):
    """`agent adapters export ID DIR --format gguf` end to end: the file llama.cpp loads as it is."""
    from agent.runtime.skill_adapters import store_lora
    from memory.db import Store

    lora = _random_lora(loaded)
    db = f"sqlite:///{tmp_path / 's.db'}"
    aid = store_lora(Store(db), lora, "merge", meta={"inputs": [], "weights": []})
    r = cli("adapters", "export", str(aid), str(tmp_path / "out"), "--format", "gguf", "--db", db, "--json")
    assert r.code == 0, r.err
    adapter = tmp_path / "out" / "adapter.gguf"
    assert json.loads(r.out)["files"] == ["README.md", "adapter.gguf"]
    card = (tmp_path / "out" / "README.md").read_text()
    base_gguf = embedded_gguf(loaded.name)
    assert f"llama-server -m {base_gguf} --lora {adapter}" in card
    assert f"FROM {base_gguf}\nADAPTER {adapter}" in card  # the Ollama Modelfile snippet
    chat = llama_backend.LlamaChat(base_gguf, n_ctx=512)
    prompts = [chat.render([{"role": "user", "content": p}]) for p in PROMPTS]
    want = _injected_logits(loaded, lora, prompts)
    base = [chat.next_token_logits(ids) for ids in prompts]
    # as a user loads it: llama-cpp-python's public lora_path (llama.cpp's --lora underneath)
    llm = llama_cpp.Llama(model_path=str(base_gguf), lora_path=str(adapter), n_ctx=512, n_threads=2,
                          logits_all=True, verbose=False)
    with_lora = []
    for ids in prompts:
        llm.reset()
        llm.eval(ids)
        with_lora.append(np.array(llm.scores[llm.n_tokens - 1]))
    kl_base = np.mean([_kl(w, b) for w, b in zip(want, base)])
    kl_lora = np.mean([_kl(w, b) for w, b in zip(want, with_lora)])
    assert kl_lora < 0.25 * kl_base, (kl_lora, kl_base)


def test_a_missing_policy_adapter_is_one_line_and_exit_2(cli, tmp_path):
    from test_agent_loop import EXAMPLE

    db = tmp_path / "s.db"
    r = cli("solve", str(EXAMPLE), "fix", "--policy", str(tmp_path / "nope"), "--db", f"sqlite:///{db}")
    assert r.code == 2 and "no such folder" in r.err and r.err.strip().count("\n") == 0
