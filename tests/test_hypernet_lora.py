import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hypernet import HypernetError, LoraWeights, Target, apply_lora, find_targets
from hypernet_fixtures import llama_targets, random_lora, synthetic_targets, tiny_llama, tiny_qwen2


def test_targets_of_a_gqa_llama():
    targets = find_targets(tiny_llama(), ("q_proj", "v_proj"))
    assert [(t.layer, t.module, t.in_features, t.out_features) for t in targets] == [
        (0, "q_proj", 64, 64), (0, "v_proj", 64, 32), (1, "q_proj", 64, 64), (1, "v_proj", 64, 32)]
    assert targets[1].path == "model.layers.0.self_attn.v_proj"
    assert targets[1].key == "layers.0.v_proj"


def test_targets_of_a_qwen2_model_and_mlp_modules():
    targets = find_targets(tiny_qwen2(), ("k_proj", "down_proj"))
    assert len(targets) == 6
    assert targets[0] == Target(0, "k_proj", "model.layers.0.self_attn.k_proj", 48, 12)
    assert targets[1] == Target(0, "down_proj", "model.layers.0.mlp.down_proj", 96, 48)


def test_unknown_module_is_refused():
    with pytest.raises(HypernetError, match="no decoder layer list"):
        find_targets(tiny_llama(), ("query_key_value",))


def test_safetensors_round_trip_is_exact_and_sha_is_stable():
    lora = random_lora(llama_targets(), rank={"layers.0.q_proj": 2, "layers.0.v_proj": 3,
                                              "layers.1.q_proj": 4, "layers.1.v_proj": 1})
    lora.metadata["note"] = "x"
    data = lora.to_safetensors_bytes()
    back = LoraWeights.from_safetensors_bytes(data, expected_sha256=lora.sha256)
    assert back.targets == lora.targets and back.metadata == lora.metadata and back.base_model == "tiny"
    for key in lora.keys:
        assert torch.equal(back.factors[key][0], lora.factors[key][0])
        assert torch.equal(back.factors[key][1], lora.factors[key][1])
    assert back.sha256 == lora.sha256
    # same content built anew (other tensor objects) hashes the same
    assert random_lora(llama_targets()).sha256 == random_lora(llama_targets()).sha256


def test_metadata_order_does_not_change_the_bytes():
    a = random_lora(llama_targets())
    b = random_lora(llama_targets())
    a.metadata.update({"x": "1", "y": "2", "z": "3"})
    b.metadata.update({"z": "3", "y": "2", "x": "1"})
    assert a.to_safetensors_bytes() == b.to_safetensors_bytes()


def test_corrupted_bytes_and_sha_mismatch_are_refused():
    data = random_lora(llama_targets()).to_safetensors_bytes()
    with pytest.raises(HypernetError, match="sha256"):
        LoraWeights.from_safetensors_bytes(data, expected_sha256="0" * 64)
    for bad in (b"", data[:50], data[:-7], b"garbage" * 20, b"\xff" * 8 + data[8:]):
        with pytest.raises(HypernetError):
            LoraWeights.from_safetensors_bytes(bad)
    nan = random_lora(llama_targets())
    nan.factors["layers.0.q_proj"][0][0, 0] = float("nan")
    with pytest.raises(HypernetError, match="non-finite"):
        LoraWeights.from_safetensors_bytes(nan.to_safetensors_bytes())


def test_shape_validation_at_construction():
    targets = llama_targets()
    factors = dict(random_lora(targets).factors)
    a, b = factors["layers.0.v_proj"]
    factors["layers.0.v_proj"] = (a, b[:, :2])
    with pytest.raises(HypernetError, match="layers.0.v_proj"):
        LoraWeights("tiny", tuple(targets), factors)
    with pytest.raises(HypernetError, match="do not match targets"):
        LoraWeights("tiny", tuple(targets[:3]), random_lora(targets).factors)


def test_adapter_for_another_base_model_or_shapes_is_refused():
    model = tiny_llama(dtype=torch.float64)
    lora = random_lora(find_targets(model, ("q_proj", "v_proj")), base_model="tiny-llama")
    with pytest.raises(HypernetError, match="made for base model 'tiny-llama'"):
        apply_lora(model, lora, base_model="other-model")
    qwen = tiny_qwen2(dtype=torch.float64)
    with pytest.raises(HypernetError, match="model shape"):
        apply_lora(qwen, lora)
    deeper = random_lora(find_targets(tiny_llama(layers=3), ("q_proj", "v_proj")))
    with pytest.raises(HypernetError, match="no module"):
        apply_lora(model, deeper)
    # nothing was left applied by the refusals
    assert all(not lin._forward_hooks for lin in (model.model.layers[0].self_attn.q_proj,))


@settings(max_examples=25, deadline=None)
@given(shapes=st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9)), min_size=1, max_size=3),
       layers=st.integers(1, 3), data=st.data(),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]))
def test_serialisation_round_trip_property(shapes, layers, data, dtype):
    targets = synthetic_targets(shapes, layers=layers)
    ranks = {t.key: data.draw(st.integers(1, 5)) for t in targets}
    lora = random_lora(targets, rank=ranks, dtype=dtype)
    back = LoraWeights.from_safetensors_bytes(lora.to_safetensors_bytes(), expected_sha256=lora.sha256)
    assert back.ranks == ranks and back.targets == lora.targets
    assert all(torch.equal(back.factors[k][i], lora.factors[k][i]) for k in lora.keys for i in (0, 1))
