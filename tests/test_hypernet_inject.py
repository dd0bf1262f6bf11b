import pytest
import torch

from hypernet import HypernetError, Hypernetwork, apply_lora, find_targets
from hypernet_fixtures import random_ids, random_lora, small_config, tiny_llama, tiny_qwen2


def weights_of(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("make", [tiny_llama, tiny_qwen2])
def test_untrained_hypernet_leaves_the_model_exactly_unchanged(make):
    model = make(dtype=torch.float64)
    hn = Hypernetwork.for_model(model, small_config(dtype="float64"), "tiny")
    lora = hn.lora_from_ids(model, random_ids(20))
    assert all(torch.count_nonzero(b) == 0 for _, b in lora.factors.values())
    assert all(torch.count_nonzero(a) > 0 for a, _ in lora.factors.values())
    x = random_ids(9, seed=1, batch=2)
    base = model(x).logits
    for mode in ("hooks", "merge"):
        with apply_lora(model, lora, mode=mode):
            assert torch.equal(model(x).logits, base)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merge_then_restore_is_bit_identical(dtype):
    model = tiny_llama(dtype=dtype)
    before = weights_of(model)
    lora = random_lora(find_targets(model, ("q_proj", "v_proj")), dtype=torch.float32)
    x = random_ids(7, batch=1)
    base = model(x).logits
    with apply_lora(model, lora, mode="merge"):
        q = "model.layers.0.self_attn.q_proj.weight"
        assert not torch.equal(model.get_parameter(q), before[q])
        assert not torch.equal(model(x).logits, base)
    after = weights_of(model)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert torch.equal(model(x).logits, base)


def test_hooks_and_merge_agree_and_switching_needs_no_reload():
    model = tiny_llama(dtype=torch.float64)
    targets = find_targets(model, ("q_proj", "v_proj"))
    x = random_ids(11, batch=2)
    base = model(x).logits
    for seed in range(3):  # switch adapters on the same loaded model
        lora = random_lora(targets, seed=seed)
        with apply_lora(model, lora, mode="hooks"):
            hooked = model(x).logits
        with apply_lora(model, lora, mode="merge"):
            merged = model(x).logits
        assert torch.allclose(hooked, merged, atol=1e-10)
        assert not torch.allclose(hooked, base, atol=1e-6)
    assert torch.equal(model(x).logits, base)
    assert not any(m._forward_hooks for m in model.modules())


def test_handle_remove_without_with_block():
    model = tiny_llama(dtype=torch.float64)
    x = random_ids(5, batch=1)
    base = model(x).logits
    handle = apply_lora(model, random_lora(find_targets(model, ("q_proj", "v_proj"))), mode="hooks")
    assert not torch.equal(model(x).logits, base)
    handle.remove()
    handle.remove()  # idempotent
    assert torch.equal(model(x).logits, base)


def test_batched_factors_apply_one_adapter_per_row():
    model = tiny_llama(dtype=torch.float64)
    targets = find_targets(model, ("q_proj", "v_proj"))
    loras = [random_lora(targets, seed=s) for s in range(2)]
    batched = {k: (torch.stack([l.factors[k][0] for l in loras]), torch.stack([l.factors[k][1] for l in loras]))
               for k in loras[0].keys}
    x = random_ids(6, batch=2)
    with apply_lora(model, batched, targets=targets):
        both = model(x).logits
    for i, lora in enumerate(loras):
        with apply_lora(model, lora):
            assert torch.allclose(both[i], model(x[i:i + 1]).logits[0], atol=1e-10)
    with apply_lora(model, batched, targets=targets), pytest.raises(HypernetError, match="batched LoRA"):
        model(random_ids(6, batch=3))
    with pytest.raises(HypernetError, match="merge mode takes one adapter"):
        apply_lora(model, batched, mode="merge", targets=targets)
    with pytest.raises(HypernetError, match="needs `targets`"):
        apply_lora(model, batched)
    with pytest.raises(HypernetError, match="mode must be"):
        apply_lora(model, loras[0], mode="fused")
