import pytest
import torch

from hypernet import HypernetError, ema_update
from hypernet_fixtures import random_lora, synthetic_targets

TARGETS = synthetic_targets([(20, 20), (20, 6)], layers=2)


def rel(x, y):
    return float(torch.linalg.norm(x - y) / torch.linalg.norm(y))


def test_first_update_is_the_new_adapter():
    new = random_lora(TARGETS, rank=3)
    out, info = ema_update(None, new, beta=0.9)
    for key in new.keys:
        assert torch.equal(out.delta(key), new.delta(key))
    assert info.updates == 1 and out.metadata["ema_updates"] == "1"
    assert float(out.metadata["ema_beta"]) == 0.9


def test_low_rank_ema_equals_dense_ema():
    beta = 0.8
    adapters = [random_lora(TARGETS, rank=2, seed=i) for i in range(5)]
    persistent = None
    dense = {key: None for key in adapters[0].keys}
    for ad in adapters:
        persistent, info = ema_update(persistent, ad, beta, max_rank=64)  # rank sufficient: exact
        for key in dense:
            dense[key] = ad.delta(key) if dense[key] is None else beta * dense[key] + (1 - beta) * ad.delta(key)
        assert info.max_rel_error < 1e-6
    for key in dense:
        assert rel(persistent.delta(key), dense[key]) < 1e-6
    assert persistent.metadata["ema_updates"] == "5"
    assert info.updates == 5


def test_ema_of_identical_adapters_stays_fixed():
    ad = random_lora(TARGETS, rank=3)
    persistent, _ = ema_update(None, ad, 0.9)
    for _ in range(4):
        persistent, info = ema_update(persistent, ad, 0.9, max_rank=8)
    for key in ad.keys:
        assert rel(persistent.delta(key), ad.delta(key)) < 1e-10
        assert persistent.ranks[key] == 3  # numerically zero directions are dropped, rank does not grow


def test_ema_rank_is_bounded_and_error_reported():
    persistent = None
    for i in range(6):
        persistent, info = ema_update(persistent, random_lora(TARGETS, rank=3, seed=i), 0.5, max_rank=4)
        assert max(persistent.ranks.values()) <= 4
    assert info.max_rel_error > 0.0  # six random rank-3 adapters do not fit in rank 4


def test_beta_zero_replaces():
    old, new = random_lora(TARGETS, seed=1), random_lora(TARGETS, seed=2)
    out, _ = ema_update(old, new, 0.0)
    for key in new.keys:
        assert rel(out.delta(key), new.delta(key)) < 1e-10


@pytest.mark.parametrize("beta", [1.0, -0.1, 1.5, float("nan")])
def test_beta_outside_unit_interval_is_refused(beta):
    ad = random_lora(TARGETS)
    with pytest.raises(HypernetError, match=r"beta must be in \[0, 1\)"):
        ema_update(ad, ad, beta)


def test_randomized_ema_with_sufficient_rank_equals_dense_ema():
    beta, persistent, dense = 0.7, None, {}
    for i in range(3):
        ad = random_lora(TARGETS, rank=2, seed=i)
        persistent, info = ema_update(persistent, ad, beta, max_rank=8, method="randomized", seed=1)
        for key in ad.keys:
            dense[key] = ad.delta(key) if i == 0 else beta * dense[key] + (1 - beta) * ad.delta(key)
        assert info.max_rel_error < 1e-6
    for key in dense:
        assert rel(persistent.delta(key), dense[key]) < 1e-6


def test_bad_recompression_method_is_refused():
    ad = random_lora(TARGETS)
    with pytest.raises(HypernetError, match="method"):
        ema_update(ad, ad, 0.5, method="fast")
    with pytest.raises(HypernetError, match="max_rank"):
        ema_update(None, ad, 0.5, max_rank=0)
