"""The hypernetwork trains through the frozen base: gradients reach it, and it learns to read its input."""

import pytest
import torch
import torch.nn.functional as F

from hypernet import Hypernetwork, apply_lora
from hypernet_fixtures import make_b_nonzero, random_ids, small_config, tiny_llama


def frozen_llama():
    model = tiny_llama()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def next_token_logits(model, hn, states, mask, chunks, query):
    factors = hn(states, mask, chunks)  # differentiable, one adapter per batch row
    with apply_lora(model, factors, targets=hn.targets):
        return model(query).logits[:, -1]


@pytest.mark.parametrize("pooling", ["perceiver", "mean"])
def test_gradients_reach_every_hypernet_parameter(pooling):
    model = frozen_llama()
    hn = Hypernetwork.for_model(model, small_config(pooling=pooling), "tiny")
    make_b_nonzero(hn)
    states, mask, chunks = hn.encode_batch(model, [random_ids(10, seed=1), random_ids(50, seed=2)])
    query = random_ids(6, seed=3, batch=2)
    loss = next_token_logits(model, hn, states, mask, chunks, query).logsumexp(-1).sum()
    loss.backward()
    missing = [n for n, p in hn.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []
    assert all(p.grad is None for p in model.parameters())  # the base stays frozen


def test_b_head_gets_gradient_from_zero_init():
    model = frozen_llama()
    hn = Hypernetwork.for_model(model, small_config(), "tiny")
    states, mask, chunks = hn.encode_batch(model, [random_ids(10, seed=1)])
    next_token_logits(model, hn, states, mask, chunks, random_ids(6, batch=1)).logsumexp(-1).sum().backward()
    assert all(torch.any(h.weight.grad != 0) for h in hn.generator.head_b.values())


def test_hypernet_learns_to_map_each_skill_to_its_own_behaviour():
    torch.manual_seed(0)
    model = frozen_llama()
    hn = Hypernetwork.for_model(model, small_config(), "tiny")
    skills = [random_ids(12, seed=1), random_ids(12, seed=2)]
    states, mask, chunks = hn.encode_batch(model, skills)  # frozen part computed once (cacheable)
    query = random_ids(6, seed=3, batch=1).expand(2, -1)  # same prompt, different skill
    wanted = torch.tensor([5, 7])
    opt = torch.optim.Adam(hn.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(next_token_logits(model, hn, states, mask, chunks, query), wanted)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # a random tiny model's logits are nearly flat (ln 512 ≈ 6.2); q/v LoRAs in 2 layers move them ~1 nat
    assert losses[-1] < losses[0] - 0.5
    with torch.no_grad():
        for i, ids in enumerate(skills):  # inference path: one LoraWeights per skill, merged into the weights
            lora = hn.lora_from_ids(model, ids)
            with apply_lora(model, lora, mode="merge"):
                logits = model(query[:1]).logits[0, -1]
            own, other = wanted[i], wanted[1 - i]
            assert logits[own] > logits[other]
            assert logits.argmax() == own
