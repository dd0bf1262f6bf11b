import importlib

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


# --- the incremental (split-form) fold against a per-target one -------------------------------------------

MIXED = synthetic_targets([(40, 40), (40, 12), (24, 40), (64, 16)], layers=3)  # 4 shape groups of 3 targets
MIXED_KEYS = [t.key for t in MIXED]


def per_target_fold(persistent, new, beta, max_rank):
    """The reference: per target, the dense β·ΔW_p + (1−β)·ΔW_n in float64, its SVD, the best rank ≤ max_rank."""
    deltas, ranks, errors = {}, {}, {}
    for key in persistent.keys:
        dense = beta * persistent.delta(key).double() + (1 - beta) * new.delta(key).double()
        u, s, vh = torch.linalg.svd(dense, full_matrices=False)
        k = min(max_rank, int((s > s[0] * 1e-6).sum()))
        deltas[key], ranks[key] = (u[:, :k] * s[:k]) @ vh[:k], k
        errors[key] = float(s[k:].square().sum().sqrt() / s.square().sum().sqrt())
    return deltas, ranks, errors


def mixed_ranks(seed: int, low: int = 1, high: int = 4) -> dict[str, int]:
    g = torch.Generator().manual_seed(seed)
    return {t.key: int(torch.randint(low, high + 1, (1,), generator=g)) for t in MIXED}


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.float64, 1e-10)])
def test_incremental_fold_equals_the_per_target_fold_step_by_step(dtype, tol, monkeypatch):
    """40 EMA steps of random adapters with mixed shapes and ranks through the truncating regime: every step
    equals the per-target fold (ΔW, rank, truncation error) and, after the first, takes the incremental path."""
    beta, max_rank, ema = 0.8, 6, importlib.import_module("hypernet.ema")
    calls = {"qr": 0}
    general = ema.recompress_factors

    def counting(*args, **kwargs):
        calls["qr"] += 1
        return general(*args, **kwargs)

    monkeypatch.setattr(ema, "recompress_factors", counting)
    persistent = None
    for step in range(40):
        new = random_lora(MIXED, rank=mixed_ranks(step), seed=100 + step, dtype=dtype, scale=0.3 + 0.1 * (step % 3))
        if persistent is not None:
            want, want_rank, want_err = per_target_fold(persistent, new, beta, max_rank)
        before = calls["qr"]
        persistent, info = ema_update(persistent, new, beta, max_rank=max_rank)
        if step == 0:
            continue
        for key in MIXED_KEYS:
            assert rel(persistent.delta(key).double(), want[key]) < tol, (step, key)
            assert persistent.ranks[key] == want_rank[key]
            assert info.rel_errors[key] == pytest.approx(want_err[key], abs=tol)
            assert persistent.factors[key][0].dtype == dtype
        # step 1 folds into the plain first adapter (general QR path); from then on the persistent
        # factors are in split form and every target takes the incremental path
        assert (calls["qr"] > before) == (step == 1), step



def test_a_persistent_adapter_not_in_split_form_takes_the_general_path_target_by_target(monkeypatch):
    """Within one shape group, targets whose persistent factors are orthogonal and targets whose are not are
    folded by different paths; both equal the per-target fold."""
    beta, max_rank = 0.7, 5
    persistent = None
    for i in range(3):
        persistent, _ = ema_update(persistent, random_lora(MIXED, rank=3, seed=i), beta, max_rank=max_rank)
    spoiled = dict(persistent.factors)
    for key in MIXED_KEYS[::2]:  # a random invertible mix of the rank axis: same ΔW, not orthogonal
        a, b = spoiled[key]
        m = torch.eye(a.shape[0], dtype=a.dtype) + 0.3 * torch.randn(a.shape[0], a.shape[0], dtype=a.dtype,
                                                                      generator=torch.Generator().manual_seed(7))
        spoiled[key] = (torch.linalg.solve(m, a), b @ m)
    spoiled = persistent.replace(spoiled)
    new = random_lora(MIXED, rank=mixed_ranks(9), seed=9)
    want, want_rank, want_err = per_target_fold(spoiled, new, beta, max_rank)
    ema, general, sizes = importlib.import_module("hypernet.ema"), None, []
    general = ema.recompress_factors
    monkeypatch.setattr(ema, "recompress_factors", lambda a, *args, **kw: sizes.append(len(a)) or general(a, *args, **kw))
    out, info = ema_update(spoiled, new, beta, max_rank=max_rank)
    assert sum(sizes) == len(MIXED_KEYS[::2])  # only the spoiled targets took the general path
    for key in MIXED_KEYS:
        assert rel(out.delta(key), want[key]) < 1e-10
        assert out.ranks[key] == want_rank[key]
        assert info.rel_errors[key] == pytest.approx(want_err[key], abs=1e-10)


def test_the_step_restores_the_thread_count():
    threads = torch.get_num_threads()
    persistent, _ = ema_update(random_lora(TARGETS, seed=1), random_lora(TARGETS, seed=2), 0.9, max_rank=4)
    ema_update(persistent, random_lora(TARGETS, seed=3), 0.9, max_rank=4)
    assert torch.get_num_threads() == threads


def test_groups_folded_on_threads_give_the_one_thread_result_bit_for_bit():
    """fold's groups (one per shape and rank) run on up to `workers` threads; they share nothing, so the
    result is the sequential one exactly, whatever order the threads finish in."""
    ema = importlib.import_module("hypernet.ema")
    persistent = None
    for i in range(3):
        persistent, _ = ema_update(persistent, random_lora(MIXED, rank=mixed_ranks(i), seed=i), 0.8, max_rank=4)
    new = random_lora(MIXED, rank=mixed_ranks(9), seed=9)
    groups = {(t.in_features, t.out_features, persistent.ranks[t.key], new.ranks[t.key]) for t in MIXED}
    assert len(groups) > 2  # enough groups for the threads to interleave
    one, errors_one = ema.fold(persistent, new, 0.8, 4, workers=1)
    for workers in (2, 8):
        many, errors_many = ema.fold(persistent, new, 0.8, 4, workers=workers)
        assert errors_many == errors_one
        for key in MIXED_KEYS:
            assert all(torch.equal(x, y) for x, y in zip(many.factors[key], one.factors[key])), (workers, key)


def test_a_fold_over_fewer_targets_scales_the_others_by_beta():
    # a policy on every module as the EMA's start, skills on a subset: a missing target's ΔW is zero
    beta = 0.9
    policy = random_lora(TARGETS, rank=4, seed=7)
    few = [t for t in TARGETS if t.module == "m0"]
    persistent, _ = ema_update(None, policy, beta)
    dense = {key: policy.delta(key) for key in policy.keys}
    for i in range(3):
        skill = random_lora(few, rank=2, seed=i)
        persistent, info = ema_update(persistent, skill, beta, max_rank=64)
        for key in dense:
            dense[key] = beta * dense[key] + ((1 - beta) * skill.delta(key) if key in skill.factors else 0)
        assert info.max_rel_error < 1e-6
    assert sorted(persistent.keys) == sorted(policy.keys)
    for key in dense:
        assert rel(persistent.delta(key), dense[key]) < 1e-6
    # the untouched modules keep the policy's rank: zero columns are dropped, not stored
    assert all(persistent.ranks[t.key] == 4 for t in TARGETS if t.module != "m0")


def test_merging_adapters_over_different_targets_and_refusing_a_shape_clash():
    from hypernet.merge import merge
    from hypernet.targets import Target

    policy = random_lora(TARGETS, rank=3, seed=1)
    skill = random_lora(TARGETS[:1], rank=2, seed=2)
    merged, _ = merge([skill, policy], [0.3, 1.0], max_rank=8)
    assert sorted(merged.keys) == sorted(policy.keys)
    assert rel(merged.delta(TARGETS[0].key), 0.3 * skill.delta(TARGETS[0].key) + policy.delta(TARGETS[0].key)) < 1e-9
    assert rel(merged.delta(TARGETS[1].key), policy.delta(TARGETS[1].key)) < 1e-9
    t = TARGETS[0]
    clash = random_lora([Target(t.layer, t.module, t.key, t.in_features, t.out_features + 1)], rank=2)
    with pytest.raises(HypernetError, match="differs in path or shape"):
        merge([policy, clash], [1.0, 1.0])
