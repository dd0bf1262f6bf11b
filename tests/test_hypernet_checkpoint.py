import pytest
import torch

from hypernet import (HypernetError, Hypernetwork, convert, hypernet_from_bytes, hypernet_to_bytes, load_hypernet,
                      save_hypernet)
from hypernet_fixtures import VOCAB, make_b_nonzero, random_ids, small_config, tiny_llama, tiny_qwen2


class CharTokenizer:
    """Stands in for a Hugging Face tokenizer: one token per character."""

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [ord(c) % VOCAB for c in text]}


def trained_like(model, **cfg):
    hn = Hypernetwork.for_model(model, small_config(**cfg), "tiny-llama")
    make_b_nonzero(hn)
    return hn


def test_checkpoint_round_trip_gives_identical_adapters(tmp_path):
    model = tiny_llama()
    hn = trained_like(model, pooling="mean", encoder_layer=1)
    path = save_hypernet(hn, tmp_path / "hn.safetensors")
    back = load_hypernet(path, base_model_id="tiny-llama")
    assert back.config == hn.config and back.targets == hn.targets and back.base_model_id == "tiny-llama"
    ids = random_ids(30)
    assert hn.lora_from_ids(model, ids).sha256 == back.lora_from_ids(model, ids).sha256
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp file left
    assert hypernet_to_bytes(back) == hypernet_to_bytes(hn)


def test_checkpoint_for_another_base_is_refused():
    model = tiny_llama()
    data = hypernet_to_bytes(trained_like(model))
    with pytest.raises(HypernetError, match="trained for base model 'tiny-llama'"):
        hypernet_from_bytes(data, base_model_id="smollm2-135m-instruct")
    hn = hypernet_from_bytes(data)  # no id given: shapes are still checked against the base in use
    with pytest.raises(HypernetError, match="model shape"):
        hn.lora_from_ids(tiny_qwen2(), random_ids(5))


def test_corrupted_checkpoint_is_refused(tmp_path):
    data = hypernet_to_bytes(trained_like(tiny_llama()))
    for bad in (b"", data[:100], data[:-10], b"x" * 64):
        with pytest.raises(HypernetError):
            hypernet_from_bytes(bad)
    with pytest.raises(HypernetError, match="cannot read"):
        load_hypernet(tmp_path / "absent.safetensors")
    with pytest.raises(HypernetError, match="parent folder"):
        save_hypernet(trained_like(tiny_llama()), tmp_path / "no" / "hn.safetensors")


def test_convert_reports_timings_and_chunks():
    model = tiny_llama()
    hn = trained_like(model, max_chunk_tokens=16)
    lora, timings = convert(hn, model, CharTokenizer(), "Write commit subjects in imperative mood")
    assert timings.n_tokens == 40 and timings.n_chunks == 3
    assert timings.encode_ms > 0 and timings.generate_ms > 0
    assert timings.total_ms >= timings.encode_ms + timings.generate_ms
    assert lora.base_model == "tiny-llama" and set(lora.ranks.values()) == {3 * hn.config.rank}
    with pytest.raises(HypernetError, match="empty skill"):
        convert(hn, model, CharTokenizer(), "")


def test_generate_is_batched_over_targets_and_deterministic():
    model = tiny_llama()
    hn = trained_like(model)
    ids = random_ids(12)
    first, second = hn.lora_from_ids(model, ids), hn.lora_from_ids(model, ids)
    assert first.sha256 == second.sha256
    assert all(not a.requires_grad for a, _ in first.factors.values())
    other = hn.lora_from_ids(model, random_ids(12, seed=9))
    assert other.sha256 != first.sha256  # the adapter depends on the skill


def test_generator_refuses_heterogeneous_module_shapes():
    from hypernet import LoraGenerator, Target
    targets = [Target(0, "q_proj", "l.0.q", 8, 8), Target(1, "q_proj", "l.1.q", 8, 16)]
    with pytest.raises(HypernetError, match="different shapes"):
        LoraGenerator(small_config(), targets, 4)


def test_dtype_follows_config():
    model = tiny_llama(dtype=torch.float64)
    hn = trained_like(model, dtype="float64")
    lora = hn.lora_from_ids(model, random_ids(5))
    assert all(a.dtype == torch.float64 for a, _ in lora.factors.values())
