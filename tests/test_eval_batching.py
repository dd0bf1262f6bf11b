"""Batched evaluation: one LoRA per batch row, left padding, and answers equal to unbatched decoding."""

from __future__ import annotations

import pytest
import torch

from agent.runtime.backends import LocalChat, prompt_ids
from agent.learn.generation import Request, generate_all, generate_batch
from hypernet import HypernetError, apply_lora, find_targets
from hypernet.inject import APPLIED_ATTR, apply_lora_rows
from hypernet_fixtures import random_ids, random_lora, tiny_llama
from tests.tiny import tiny_model_dir

MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def row_loras(model, dtype):
    """Adapters that differ in rank and in which modules they cover, with a base row in between."""
    targets = find_targets(model, MODULES)
    qv = [t for t in targets if t.module in ("q_proj", "v_proj")]
    return [random_lora(targets, rank=4, seed=1, dtype=dtype, scale=0.3), None,
            random_lora(qv, rank=2, seed=2, dtype=dtype, scale=0.3),
            random_lora(targets, rank=8, seed=3, dtype=torch.float32, scale=0.3)]  # float32 factors on any model


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_each_row_equals_that_row_alone_under_apply_lora(dtype):
    model = tiny_llama(dtype=dtype)
    loras = row_loras(model, dtype)
    x = random_ids(9, seed=4, batch=len(loras))
    with apply_lora_rows(model, loras):
        batched = model(x).logits
    for i, lora in enumerate(loras):
        if lora is None:
            alone = model(x[i:i + 1]).logits
        else:
            with apply_lora(model, lora, mode="hooks"):
                alone = model(x[i:i + 1]).logits
            assert not torch.allclose(alone, model(x[i:i + 1]).logits, atol=1e-3)  # the adapter matters
        assert torch.allclose(batched[i:i + 1], alone, atol=1e-5, rtol=0), i


def test_rows_without_adapter_are_exactly_the_base_and_removal_restores_the_model():
    model = tiny_llama(dtype=torch.float64)
    loras = row_loras(model, torch.float64)
    x = random_ids(7, seed=5, batch=len(loras))
    base = model(x).logits
    with apply_lora_rows(model, loras) as handle:
        assert any(getattr(m, APPLIED_ATTR, 0) for m in model.modules())
        out = model(x).logits
    assert torch.equal(out[1], base[1])
    assert not torch.allclose(out[0], base[0])
    handle.remove()  # idempotent
    assert not any(m._forward_hooks for m in model.modules())
    assert not any(getattr(m, APPLIED_ATTR, 0) for m in model.modules())
    assert torch.equal(model(x).logits, base)
    with apply_lora_rows(model, [None, None]):  # no adapter at all: nothing hooked
        assert not any(m._forward_hooks for m in model.modules())


def test_bad_rows_are_refused():
    model = tiny_llama(dtype=torch.float64)
    loras = row_loras(model, torch.float64)
    with apply_lora_rows(model, loras), pytest.raises(HypernetError, match="batched LoRA for 4 inputs"):
        model(random_ids(5, batch=2))
    with pytest.raises(HypernetError, match="base model"):
        apply_lora_rows(model, loras, base_model="another-model")
    other = find_targets(tiny_llama(layers=3), ("q_proj",))[2:]  # a layer this model does not have
    with pytest.raises(HypernetError):
        apply_lora_rows(model, [random_lora(other)])
    assert not any(m._forward_hooks for m in model.modules())


# --- generation on the tiny chat model (real tokenizer and chat template) ------------------------

@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_model_dir(tmp_path_factory)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float64).eval()
    return model, AutoTokenizer.from_pretrained(folder)


PROMPTS = ["Fix the off-by-one in clamp.", "Write a test.", "Review this diff:\n```\n- a\n+ b\n```\nand say why.",
           "Run the tests first, read the failing code, edit it, run the tests again, then submit."]


def requests_for(model):
    loras = row_loras(model, torch.float64)
    systems = [None, "Steps: reproduce, locate, fix.", None, None]
    return [Request(([{"role": "system", "content": s}] if s else []) + [{"role": "user", "content": p}], lora)
            for p, s, lora in zip(PROMPTS, systems, loras)]


def unbatched(model, tokenizer, request, max_new_tokens):
    chat = LocalChat(model, tokenizer, max_new_tokens=max_new_tokens, stop_after_block=False)
    if request.lora is None:
        return chat.chat(request.messages)[0]
    with apply_lora(model, request.lora, mode="merge"):
        return chat.chat(request.messages)[0]


def test_left_padded_batch_gives_each_row_its_unbatched_greedy_answer(chat_model):
    model, tok = chat_model
    requests = requests_for(model)
    lengths = {len(prompt_ids(tok, r.messages, 10_000)[0]) for r in requests}
    assert len(lengths) == len(requests)  # every row but the longest is padded
    expected = [unbatched(model, tok, r, 10) for r in requests]
    assert generate_batch(model, tok, requests, 10) == expected
    base = [unbatched(model, tok, Request(r.messages), 10) for r in requests]
    assert any(e != b for e, b in zip(expected, base))  # the adapters change answers
    # any batch size and order: answers come back in request order
    assert generate_all(model, tok, requests, 10, batch_size=3) == expected


def test_a_row_that_reaches_eos_stops_while_the_others_go_on(chat_model):
    model, tok = chat_model
    requests = requests_for(model)
    with apply_lora(model, requests[2].lora, mode="merge"):
        ids = prompt_ids(tok, requests[2].messages, 10_000)
        stop_id = int(model.generate(input_ids=ids, max_new_tokens=1, do_sample=False)[0, -1])
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = stop_id  # row 2 now ends after its first token
    try:
        expected = [unbatched(model, tok, r, 12) for r in requests]
        got = generate_batch(model, tok, requests, 12)
    finally:
        model.generation_config.eos_token_id = saved
    assert got == expected
    assert got[2] == tok.decode([stop_id])
    assert all(len(g) > len(got[2]) for i, g in enumerate(got) if i != 2)


def test_continuous_batching_refills_finished_rows_at_once_and_answers_as_unbatched(chat_model):
    """8 requests, 3 rows, a stop token that ends answers at different steps: finished rows take the next
    request mid-batch (different adapters per row, prompts of other lengths), and every answer is still
    the request's unbatched greedy one."""
    model, tok = chat_model
    base = requests_for(model)
    requests = base + [Request([{"role": "user", "content": p + " Then say why, briefly."}], r.lora)
                       for p, r in zip(PROMPTS[::-1], base)]
    saved = model.generation_config.eos_token_id
    full = [unbatched(model, tok, r, 12) for r in requests]
    # the token that ends the most answers early, at different points
    ids = [tok(text, add_special_tokens=False)["input_ids"] for text in full]
    counts: dict[int, int] = {}
    for seq in ids:
        for t in set(seq[1:8]):
            counts[t] = counts.get(t, 0) + 1
    stop_id = max(counts, key=counts.get)
    model.generation_config.eos_token_id = [saved, stop_id] if isinstance(saved, int) else [*saved, stop_id]
    done: list[int] = []
    try:
        expected = [unbatched(model, tok, r, 12) for r in requests]
        got = generate_all(model, tok, requests, 12, batch_size=3, on_batch=lambda rows, s: done.extend(rows))
    finally:
        model.generation_config.eos_token_id = saved
    assert len({len(e) for e in expected}) >= 3  # the answers do end at different steps
    assert got == expected
    assert sorted(done) == list(range(len(requests)))


def test_a_longer_prompt_put_into_a_running_batch_widens_it_and_decodes_as_alone(chat_model):
    """A request longer than the batch's cache (possible once finished rows were trimmed) widens every row
    on the left; the next step's logits are each row's own, as if decoded alone."""
    from transformers import DynamicCache

    from agent.learn.generation import _Batch, _cache_arg

    model, tok = chat_model
    name = _cache_arg(model)
    short, long = (prompt_ids(tok, [{"role": "user", "content": c}], 10_000) for c in (PROMPTS[1], PROMPTS[3]))
    assert long.shape[1] > short.shape[1]
    batch, alone = _Batch(model, 2, torch.device("cpu")), []
    for slot, ids in enumerate((short, long)):
        out = model(input_ids=ids, use_cache=True, **{name: DynamicCache(config=model.config)})
        first = int(out.logits[0, -1].argmax())
        batch.put(slot, out[name], first)
        alone.append(model(input_ids=torch.cat([ids, torch.tensor([[first]])], 1)).logits[0, -1])
    assert batch.mask.shape == (2, long.shape[1]) and int(batch.mask[0].sum()) == short.shape[1]
    mask = torch.cat([batch.mask, batch.mask.new_ones(2, 1)], 1)
    logits = model(input_ids=batch.last[:, None], attention_mask=mask, position_ids=batch.pos[:, None],
                   use_cache=True, **{name: batch.cache}).logits[:, -1]
    for slot in range(2):
        assert torch.allclose(logits[slot], alone[slot], atol=1e-9), slot


def test_the_batch_cache_appends_in_place_and_holds_what_concatenation_would():
    """_KVRows: a decode step writes into spare room (no copy of the cache), a full buffer is regrown,
    dropped leading columns and kept rows stay consistent: always equal to plain concatenation."""
    from agent.learn.generation import _KVRows

    g = torch.Generator().manual_seed(0)
    k, v = torch.randn(3, 2, 5, 4, generator=g), torch.randn(3, 2, 5, 4, generator=g)
    layer = _KVRows()
    layer.lazy_initialization(k, v)
    layer.hold(k, v)
    ref_k, ref_v = k.clone(), v.clone()
    moved = 0
    for step in range(150):
        rows = ref_k.shape[0]
        nk, nv = torch.randn(rows, 2, 1, 4, generator=g), torch.randn(rows, 2, 1, 4, generator=g)
        before = layer.keys.untyped_storage().data_ptr()
        got_k, got_v = layer.update(nk, nv)
        moved += layer.keys.untyped_storage().data_ptr() != before
        ref_k, ref_v = torch.cat([ref_k, nk], -2), torch.cat([ref_v, nv], -2)
        if step == 40:  # the batch's leading columns finished: trimmed
            layer.drop_front(7)
            ref_k, ref_v = ref_k[:, :, 7:], ref_v[:, :, 7:]
        if step == 90:  # a row finished for good
            layer.hold(layer.keys[[0, 2]], layer.values[[0, 2]])
            ref_k, ref_v = ref_k[[0, 2]], ref_v[[0, 2]]
        assert torch.equal(layer.keys, ref_k) and torch.equal(layer.values, ref_v), step
        assert layer.get_seq_length() == ref_k.shape[-2]
    assert torch.equal(got_k, layer.keys) and torch.equal(got_v, layer.values)
    assert 1 <= moved <= 4  # 150 appends, a handful of reallocations: the rest were written in place


def test_agent_eval_decodes_the_default_number_of_rows():
    import inspect

    from agent.commands import evaluation
    from agent.learn.evaluate import evaluate
    from agent.learn.generation import BATCH_SIZE

    assert inspect.signature(evaluation.command).parameters["batch_size"].default.default == BATCH_SIZE
    assert inspect.signature(evaluate).parameters["batch_size"].default == BATCH_SIZE
