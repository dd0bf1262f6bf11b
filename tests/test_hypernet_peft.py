import json

import pytest
import torch
from peft import PeftModel

from hypernet import HypernetError, apply_lora, export_peft, find_targets, import_peft, merge
from hypernet_fixtures import random_ids, random_lora, tiny_llama, tiny_qwen2


def peft_logits(make, folder, x):
    peft_model = PeftModel.from_pretrained(make(), str(folder))
    peft_model.eval()
    with torch.no_grad():
        return peft_model(x).logits


@pytest.mark.parametrize("make", [tiny_llama, tiny_qwen2])
def test_peft_round_trip_with_mixed_ranks(tmp_path, make):
    model = make()
    targets = find_targets(model, ("q_proj", "v_proj"))
    a = random_lora(targets, rank=2, seed=1, dtype=torch.float32, scale=0.3)
    b = random_lora(targets, rank=3, seed=2, dtype=torch.float32, scale=0.3)
    merged, _ = merge([a, b], [0.6, -0.4])
    # make ranks differ per target, as recompression does
    merged, _ = merge([merged], [1.0], max_rank=4)
    ranks = merged.ranks
    x = random_ids(8, batch=2)
    with torch.no_grad():
        base = model(x).logits
    for lora in (a, merged):
        folder = export_peft(lora, tmp_path / f"adapter-{lora.max_rank}")
        with torch.no_grad(), apply_lora(model, lora):
            ours = model(x).logits
        theirs = peft_logits(make, folder, x)
        assert torch.allclose(ours, theirs, atol=1e-4), float((ours - theirs).abs().max())
        assert not torch.allclose(theirs, base, atol=1e-3)  # PEFT really applied it
        back = import_peft(folder)
        assert back.base_model == lora.base_model and back.ranks == lora.ranks
        for key in lora.keys:
            assert torch.allclose(back.delta(key), lora.delta(key), atol=1e-7)
    cfg = json.loads((tmp_path / f"adapter-{merged.max_rank}" / "adapter_config.json").read_text())
    assert cfg["use_rslora"] is False and cfg["bias"] == "none"
    assert all(cfg["alpha_pattern"][p] == r for p, r in cfg["rank_pattern"].items())
    assert sorted(cfg["rank_pattern"].values()) == sorted(ranks.values())


def test_import_folds_peft_scaling_into_the_factors(tmp_path):
    model = tiny_llama()
    lora = random_lora(find_targets(model, ("q_proj", "v_proj")), rank=4, dtype=torch.float32)
    folder = export_peft(lora, tmp_path / "a")
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg.update({"r": 4, "lora_alpha": 32, "rank_pattern": {}, "alpha_pattern": {}, "use_rslora": True})
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    back = import_peft(folder)  # PEFT would scale by 32/sqrt(4) = 16
    key = lora.keys[0]
    assert torch.allclose(back.delta(key), 16 * lora.delta(key), atol=1e-6)
    x = random_ids(5, batch=1)
    with torch.no_grad(), apply_lora(model, back):
        ours = model(x).logits
    assert torch.allclose(ours, peft_logits(tiny_llama, folder, x), atol=1e-4)


def test_export_to_missing_parent_is_refused_and_writes_nothing(tmp_path):
    lora = random_lora(find_targets(tiny_llama(), ("q_proj", "v_proj")))
    with pytest.raises(HypernetError, match="parent folder"):
        export_peft(lora, tmp_path / "missing" / "adapter")
    assert list(tmp_path.iterdir()) == []


def test_export_is_atomic_and_refuses_to_clobber(tmp_path):
    targets = find_targets(tiny_llama(), ("q_proj", "v_proj"))
    first, second = random_lora(targets, seed=1), random_lora(targets, seed=2)
    export_peft(first, tmp_path / "a")
    with pytest.raises(HypernetError, match="already exists"):
        export_peft(second, tmp_path / "a")
    export_peft(second, tmp_path / "a", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no temp folders left behind
    assert torch.allclose(import_peft(tmp_path / "a").delta(targets[0].key), second.delta(targets[0].key))


def test_import_refuses_broken_folders(tmp_path):
    with pytest.raises(HypernetError, match="not a PEFT adapter folder"):
        import_peft(tmp_path)
    folder = export_peft(random_lora(find_targets(tiny_llama(), ("q_proj", "v_proj"))), tmp_path / "a")
    (folder / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(HypernetError, match="corrupted"):
        import_peft(folder)
