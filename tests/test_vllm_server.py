"""Parametric mode against a real vLLM server (the CPU build that .ci/start-vllm installs and starts), skipped
unless AGENT_TEST_VLLM_URL is set: the server must serve the embedded model's cached safetensors (float32) under
AGENT_TEST_VLLM_MODEL (default its hub id) with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, --enable-lora and
--max-lora-rank 128.

What is checked is what the server computes, not only that it answers: under an exported adapter, vLLM's
log-probabilities of a fixed token sequence (teacher forcing, so no greedy near-tie can make the check flaky)
equal the project's own forward pass with the same adapter injected, to float32 noise, while the adapter moves
them far more than that noise. Then a parametric solve over the endpoint, which records the adapter and leaves
nothing loaded, and an `agent eval --generate-endpoint` whose served answers are the local ones."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest
import torch

URL = os.environ.get("AGENT_TEST_VLLM_URL")
SERVED = os.environ.get("AGENT_TEST_VLLM_MODEL", "HuggingFaceTB/SmolLM2-135M-Instruct")
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "buggy-stats"

pytestmark = pytest.mark.skipif(not URL, reason="AGENT_TEST_VLLM_URL not set (.ci/start-vllm starts a vLLM server)")


@pytest.fixture(scope="module")
def loaded():
    from agent.runtime.base_model import DEFAULT_MODEL, load_model

    return load_model(DEFAULT_MODEL, device="cpu", dtype="float32")


@pytest.fixture
def chat():
    from agent.runtime.endpoint import EndpointChat

    return EndpointChat(URL, SERVED)


def served_models(chat) -> set[str]:
    return {m.id for m in chat.client.models.list()}


def strong_lora(loaded, seed: int = 0):
    """A random adapter on every linear layer with mixed ranks (64 on q/v, 8 elsewhere: rank_pattern and
    alpha_pattern are exercised), strong enough to move the next-token log-probabilities by ~0.1 nats."""
    from hypernet.lora import LoraWeights
    from hypernet.peft_io import model_targets

    g = torch.Generator().manual_seed(seed)
    factors = {}
    targets = model_targets(loaded.model)
    for t in targets:
        r = 64 if t.module in ("q_proj", "v_proj") else 8
        factors[t.key] = (torch.randn(r, t.in_features, generator=g) / t.in_features ** 0.5,
                          torch.randn(t.out_features, r, generator=g) * 0.05 / r ** 0.5)
    return LoraWeights(loaded.name, targets, factors, {})


def token_ids(tok) -> list[int]:
    ids = tok.apply_chat_template([{"role": "user", "content": "Write a Python function that adds two numbers."}],
                                  add_generation_prompt=True, return_dict=True)["input_ids"]
    return list(ids) + tok("def add(a, b):\n    return a + b\n", add_special_tokens=False)["input_ids"]


def server_logprobs(chat, model: str, ids: list[int]) -> torch.Tensor:
    """log p(ids[i] | ids[:i]) for i >= 1, as vLLM computes them (prompt_logprobs, token ids in, no template)."""
    out = chat.client.post("/completions", cast_to=object, body={
        "model": model, "prompt": ids, "max_tokens": 1, "temperature": 0, "prompt_logprobs": 0})
    rows = out["choices"][0]["prompt_logprobs"]
    assert rows[0] is None and len(rows) == len(ids)
    return torch.tensor([row[str(tok)]["logprob"] for tok, row in zip(ids[1:], rows[1:])])


@torch.no_grad()
def own_logprobs(loaded, ids: list[int]) -> torch.Tensor:
    logits = loaded.model(torch.tensor([ids])).logits[0].float()
    lp = torch.log_softmax(logits, dim=-1)
    return lp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]


def test_an_exported_adapter_computes_on_vllm_what_it_computes_here(loaded, chat, tmp_path):
    from agent.runtime.served_adapter import probe, serve_adapter
    from hypernet.inject import apply_lora

    probe(chat)  # the adapter API is there
    ids = token_ids(loaded.tokenizer)
    base_here, base_there = own_logprobs(loaded, ids), server_logprobs(chat, SERVED, ids)
    # the same weights on both sides (the server serves the project's cached safetensors)
    assert (base_here - base_there).abs().max() < 2e-3
    lora = strong_lora(loaded)
    with apply_lora(loaded.model, lora, base_model=loaded.name):
        adapted_here = own_logprobs(loaded, ids)
    shift = (adapted_here - base_here).abs()
    assert shift.mean() > 0.05 and shift.max() > 0.3  # a strong adapter: the check below can tell it apart
    with serve_adapter(chat, lora, SERVED, folder=tmp_path) as (as_adapter, served):
        assert served.name in served_models(chat)
        adapted_there = server_logprobs(chat, served.name, ids)
        answer, _ = as_adapter.chat([{"role": "user", "content": "What is 2 + 2?"}], max_tokens=8)
        assert answer.strip()
    # vLLM under the adapter = the project's injection, to float32 noise; far from the base
    assert (adapted_there - adapted_here).abs().max() < 2e-3, (adapted_there - adapted_here).abs().max()
    assert (adapted_there - base_there).abs().mean() > 0.05
    assert served.name not in served_models(chat) and list(tmp_path.iterdir()) == []


def test_a_rank_over_the_servers_limit_is_one_line_naming_the_flag(loaded, chat, tmp_path):
    from agent.runtime.endpoint import EndpointError
    from agent.runtime.served_adapter import serve_adapter
    from hypernet.lora import LoraWeights

    lora = strong_lora(loaded)
    t = lora.targets[0]
    wide = {k: (torch.randn(256, t.in_features) * 0.01, torch.zeros(t.out_features, 256)) if k == t.key else f
            for k, f in lora.factors.items()}
    with pytest.raises(EndpointError) as err:
        with serve_adapter(chat, LoraWeights(lora.base_model, lora.targets, wide, {}), SERVED, folder=tmp_path):
            pytest.fail("a rank-256 adapter was loaded on a --max-lora-rank 128 server")
    assert "--max-lora-rank 256" in str(err.value) and "\n" not in str(err.value), err.value
    assert list(tmp_path.iterdir()) == []


def test_parametric_solve_over_vllm_records_the_adapter_and_unloads_it(cli, chat, tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    served_dir = tmp_path / "served"
    r = cli("solve", str(EXAMPLE), "fix the failing test", "--mode", "parametric", "--endpoint", URL,
            "--endpoint-model", SERVED, "--endpoint-adapter-dir", str(served_dir), "--max-steps", "2",
            "--top-k", "1", "--db", db, "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    adapter = report["endpoint_adapter"]
    assert adapter["name"].startswith("parametric-skills-") and adapter["base_model"] == SERVED
    assert [p["name"] for p in adapter["parts"]] == ["policy", "skills"]  # the shipped policy + the skill
    assert adapter["max_rank"] == sum(p["max_rank"] for p in adapter["parts"])  # exact: ranks add on q/v
    assert 1 <= report["steps"] <= 2 and report["tokens"] > 0
    shown = json.loads(cli("trajectories", "show", str(report["trajectory_id"]), "--db", db, "--json").out)
    assert shown["mode"] == "parametric" and shown["model"] == SERVED
    assert shown["outcome"]["endpoint_adapter"]["name"] == adapter["name"]
    assert [m["role"] for m in shown["messages"][:3]] == ["system", "user", "assistant"]
    assert adapter["name"] not in served_models(chat) and list(served_dir.iterdir()) == []


def split_margin(loaded, request, here: str, there: str) -> float:
    """Where two greedy answers to `request` part: the local model's log-probability gap (under the request's
    adapter) between the token each took there (end of text for an answer that stopped)."""
    from agent.learn.generation import _eos_ids
    from agent.runtime.backends import prompt_ids
    from hypernet.inject import apply_lora

    tok = loaded.tokenizer
    eos = min(_eos_ids(loaded.model, tok))
    a, b = ([*tok(t, add_special_tokens=False)["input_ids"], eos] for t in (here, there))
    k = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    ids = prompt_ids(tok, request.messages, 8192)[0].tolist() + a[:k]
    adapted = (apply_lora(loaded.model, request.lora, base_model=loaded.name) if request.lora is not None
               else contextlib.nullcontext())
    with torch.no_grad(), adapted:
        lp = torch.log_softmax(loaded.model(torch.tensor([ids])).logits[0, -1].float(), dim=-1)
    return float((lp[a[k]] - lp[b[k]]).abs())


def test_eval_over_vllm_answers_as_here_under_each_adapter_and_unloads_them(cli, loaded, chat, tmp_path):
    """`agent eval --generate-endpoint`: one skill (refactoring: the shortest held-out prompt, since vLLM's CPU
    build prefills ~15 tokens/s under an adapter), parametric and none. The served answers are compared with
    this machine's greedy answers to the same requests (same messages, same adapter: the store's cached
    conversion, whose sha256 is the one the server loaded): equal text, or, only where the two greedy paths
    part at a near-tie that float32 noise can flip (the server's log-probabilities are ours to < 2e-3, first
    test), a local gap under 1e-2 between the two tokens there."""
    from agent.commands.evaluation import first_skills
    from agent.learn.evaluate import plan
    from agent.learn.generation import generate_all
    from agent.runtime.hypernet_loader import load as load_hypernet
    from agent.runtime.served_adapter import digest
    from agent.synth.eval_items import make_eval_items
    from memory.db import Store

    db = f"sqlite:///{tmp_path / 's.db'}"
    served_dir = tmp_path / "served"
    r = cli("eval", "--generate-endpoint", URL, "--generate-model", SERVED, "--mode", "parametric", "--mode", "none",
            "--subtask", "refactoring", "--n", "1", "--max-skills", "1", "--max-new-tokens", "24",
            "--generate-adapter-dir", str(served_dir), "--db", db, "--out", str(tmp_path / "res"), "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    generator = report["generator"]
    assert generator["endpoint"] == URL and generator["model"] == SERVED
    [adapter] = generator["adapters"]
    assert adapter["mode"] == "parametric" and adapter["answers"] == 1 and adapter["base_model"] == SERVED
    assert adapter["name"] not in served_models(chat) and list(served_dir.iterdir()) == []
    answers = {it["mode"]: it["response"] for it in
               json.loads((tmp_path / "res" / "eval_heldout.json").read_text())["items"]}
    assert set(answers) == {"parametric", "none"} and all(a.strip() for a in answers.values())
    assert answers["parametric"] != answers["none"]  # same messages: the adapter made the difference there

    items = first_skills(make_eval_items(split="heldout", subtask="refactoring", n=1, seed=0), 1)
    store = Store(db)
    _, requests = plan(items, loaded, load_hypernet(loaded, store), ("parametric", "none"), store)
    assert digest(requests[0].lora) == adapter["sha256"]  # the very adapter the server ran
    here = generate_all(loaded.model, loaded.tokenizer, requests, 24, 2)
    for (mode, request), mine in zip(zip(("parametric", "none"), requests), here):
        if answers[mode] != mine:
            margin = split_margin(loaded, request, mine, answers[mode])
            assert margin < 1e-2, (mode, mine, answers[mode], margin)
