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


def _tamper(folder, edit):
    """Rewrite the adapter's tensors through `edit(dict)`."""
    from safetensors.torch import load_file, save_file

    path = folder / "adapter_model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def _q0(tensors, factor="A"):
    return next(k for k in tensors if ".layers.0." in k and "q_proj" in k and f"lora_{factor}" in k)


@pytest.mark.parametrize("case,match", [
    ("nan", r"lora_A holds NaN or infinite values"),
    ("inf", r"lora_B holds NaN or infinite values"),
    ("wide", r"do not fit the base model's 64->64 layer"),
    ("layer", r"layer 7 does not exist \(the base model has layers 0-1\)"),
    ("module", r"unknown module 'z_proj'"),
])
def test_import_refuses_adapters_that_do_not_fit_the_base_model(tmp_path, case, match):
    from hypernet.peft_io import model_targets

    model = tiny_llama()
    folder = export_peft(random_lora(find_targets(model, ("q_proj", "v_proj")), rank=2, dtype=torch.float32),
                         tmp_path / "a")

    def edit(t):
        if case == "nan":
            t[_q0(t)][0, 0] = float("nan")
        elif case == "inf":
            t[_q0(t, "B")][0, 0] = float("inf")
        elif case == "wide":  # made for a 96-wide model
            t[_q0(t)] = torch.zeros(2, 96)
        else:
            old = "layers.0.self_attn.q_proj"
            new = "layers.7.self_attn.q_proj" if case == "layer" else "layers.0.self_attn.z_proj"
            for key in [k for k in t if old in k]:
                t[key.replace(old, new)] = t.pop(key)

    _tamper(folder, edit)
    with pytest.raises(HypernetError, match=match) as err:
        import_peft(folder, base=model_targets(model))
    assert "\n" not in str(err.value)
    if case in ("wide", "layer", "module"):  # without the base model, only finiteness can be checked
        import_peft(folder)


def test_model_targets_lists_every_linear_of_the_decoder_layers():
    from hypernet.peft_io import model_targets

    targets = model_targets(tiny_llama())
    assert {t.module for t in targets} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                          "down_proj"}
    assert {t.layer for t in targets} == {0, 1}
    v = next(t for t in targets if t.key == "layers.0.v_proj")
    assert (v.in_features, v.out_features) == (64, 32)


def test_base_targets_reads_only_the_config(tmp_path):
    from hypernet.peft_io import base_targets, model_targets

    model = tiny_llama()
    model.config.save_pretrained(tmp_path)
    assert base_targets(str(tmp_path)) == model_targets(model)
    with pytest.raises(HypernetError, match="cannot read the config"):
        base_targets(str(tmp_path / "missing"))
