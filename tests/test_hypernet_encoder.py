import pytest
import torch

from hypernet import (HypernetConfig, HypernetError, Hypernetwork, apply_lora, chunk_ids, encode_states, join_chunks,
                      merge, states_cache_key)
from hypernet_fixtures import make_b_nonzero, random_ids, small_config, tiny_llama


def test_config_round_trip_and_validation():
    cfg = HypernetConfig(rank=4, target_modules=("q_proj", "k_proj"), pooling="mean")
    assert HypernetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(HypernetError, match="unknown"):
        HypernetConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    for bad in (dict(rank=0), dict(pooling="max"), dict(latent_dim=30, n_heads=4), dict(dtype="int8"),
                dict(target_modules=()), dict(alpha=0)):
        with pytest.raises(HypernetError):
            HypernetConfig(**bad)


def test_chunking_never_truncates():
    ids = torch.arange(70)
    chunks, mask = chunk_ids(ids, 32)
    assert chunks.shape == (3, 32)
    assert torch.equal(chunks[mask], ids)
    assert mask.sum(1).tolist() == [32, 32, 6]
    one, _ = chunk_ids(ids[:5], 32)
    assert one.shape == (1, 5)
    with pytest.raises(HypernetError, match="empty skill"):
        chunk_ids([], 32)


@pytest.mark.parametrize("layer", [0, 1, 2, -1, -2])
def test_encode_states_reads_the_chosen_hidden_layer(layer):
    model = tiny_llama(dtype=torch.float64, layers=3)
    ids = random_ids(12, batch=2)
    expected = model(ids, output_hidden_states=True).hidden_states[layer]
    assert torch.allclose(encode_states(model, ids, None, layer), expected, atol=1e-12)
    with pytest.raises(HypernetError, match="out of range"):
        encode_states(model, ids, None, 4)


def test_encode_states_needs_no_grad_and_leaves_base_untouched():
    model = tiny_llama()
    states = encode_states(model, random_ids(8, batch=1), None, 1)
    assert not states.requires_grad
    assert not any(m._forward_hooks for m in model.modules())


def test_cache_key_depends_on_content_and_settings():
    ids = random_ids(10)
    k = states_cache_key(ids, "m", -1, 1024)
    assert k == states_cache_key(ids.tolist(), "m", -1, 1024)
    assert k != states_cache_key(ids, "m", 3, 1024)
    assert k != states_cache_key(ids, "other", -1, 1024)
    assert k != states_cache_key(ids.flip(0), "m", -1, 1024)


@pytest.mark.parametrize("pooling", ["perceiver", "mean"])
def test_padding_does_not_change_the_adapter(pooling):
    model = tiny_llama(dtype=torch.float64)
    hn = Hypernetwork.for_model(model, small_config(dtype="float64", pooling=pooling), "tiny")
    make_b_nonzero(hn)
    short, long = random_ids(7, seed=1), random_ids(20, seed=2)
    states, mask, chunks = hn.encode_batch(model, [short, long])  # short is right-padded to 20
    batched = hn(states, mask, chunks)
    alone = hn.lora_from_ids(model, short)
    for key in alone.keys:
        assert torch.allclose(batched[key][0][0], alone.factors[key][0], atol=1e-10)
        assert torch.allclose(batched[key][1][0], alone.factors[key][1], atol=1e-10)


def test_long_skill_is_chunked_and_joined_by_weighted_rank_concatenation():
    model = tiny_llama(dtype=torch.float64)
    cfg = small_config(dtype="float64", max_chunk_tokens=16)
    hn = Hypernetwork.for_model(model, cfg, "tiny")
    make_b_nonzero(hn)
    ids = random_ids(40)  # 16 + 16 + 8 tokens
    lora = hn.lora_from_ids(model, ids)
    assert lora.metadata["n_chunks"] == "3"
    assert set(lora.ranks.values()) == {3 * cfg.rank}
    parts = [hn.lora_from_ids(model, ids[i:i + 16]) for i in (0, 16, 32)]
    expected, _ = merge(parts, [1 / 3] * 3)
    for key in lora.keys:
        assert torch.allclose(lora.delta(key), expected.delta(key), atol=1e-12)
    with pytest.raises(HypernetError, match="empty skill"):
        hn.lora_from_ids(model, torch.tensor([], dtype=torch.long))


def test_join_chunks_pads_ranks_exactly():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 2, 5, generator=g, dtype=torch.float64)
    b = torch.randn(3, 4, 2, generator=g, dtype=torch.float64)
    joined = join_chunks({"k": (a, b)}, [1, 2])
    ja, jb = joined["k"]
    assert ja.shape == (2, 4, 5) and jb.shape == (2, 4, 4)
    assert torch.allclose(jb[0] @ ja[0], b[0] @ a[0])
    assert torch.allclose(jb[1] @ ja[1], 0.5 * (b[1] @ a[1] + b[2] @ a[2]))


def test_cached_embedding_gives_the_same_factors():
    model = tiny_llama(dtype=torch.float64)
    hn = Hypernetwork.for_model(model, small_config(dtype="float64"), "tiny")
    make_b_nonzero(hn)
    states, mask, chunks = hn.encode_batch(model, [random_ids(9), random_ids(40, seed=4)])
    emb = hn.aggregate(states, mask)  # what a caller may cache per (skill, hypernet checkpoint)
    assert emb.shape == (1 + 2, hn.config.n_latents, hn.config.latent_dim)
    direct, cached = hn(states, mask, chunks), hn.from_embedding(emb, chunks)
    for key in direct:
        assert torch.equal(direct[key][0], cached[key][0]) and torch.equal(direct[key][1], cached[key][1])


def test_encoding_with_an_adapter_applied_is_refused():
    model = tiny_llama()
    hn = Hypernetwork.for_model(model, small_config(), "tiny")
    lora = hn.lora_from_ids(model, random_ids(5))
    for mode in ("hooks", "merge"):
        with apply_lora(model, lora, mode=mode), pytest.raises(HypernetError, match="adapter is applied"):
            hn.lora_from_ids(model, random_ids(5))
    hn.lora_from_ids(model, random_ids(5))  # fine again once removed
