import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hypernet import HypernetError, LoraWeights, merge, recompress
from hypernet.merge import choose_method, recompress_factors
from hypernet_fixtures import random_lora, synthetic_targets

TARGETS = synthetic_targets([(24, 24), (24, 8)], layers=2)


def dense_sum(adapters, weights, key):
    return sum(w * ad.delta(key) for ad, w in zip(adapters, weights))


def rel(x, y):
    return float(torch.linalg.norm(x - y) / torch.linalg.norm(y))


def best_rank_k(m, k):
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    return (u[:, :k] * s[:k]) @ vh[:k], s


def test_concat_merge_is_exact_with_mixed_ranks_and_negative_weights():
    adapters = [random_lora(TARGETS, rank=r, seed=i) for i, r in enumerate([2, 4, 3])]
    weights = [0.7, -1.3, 2.0]
    merged, report = merge(adapters, weights)
    for key in merged.keys:
        assert rel(merged.delta(key), dense_sum(adapters, weights, key)) < 1e-12
        assert merged.ranks[key] == 9
    assert report.max_rel_error == 0.0


def test_weight_is_on_one_factor_only():
    ad = random_lora(TARGETS, rank=2)
    merged, _ = merge([ad], [-2.0])
    for key in ad.keys:
        a, b = merged.factors[key]
        assert torch.equal(b, ad.factors[key][1])
        assert torch.equal(a, -2.0 * ad.factors[key][0])


def test_single_adapter_with_weight_one_is_reproduced_exactly():
    ad = random_lora(TARGETS, rank=3)
    merged, _ = merge([ad], [1.0])
    for key in ad.keys:
        assert torch.equal(merged.factors[key][0], ad.factors[key][0])
        assert torch.equal(merged.factors[key][1], ad.factors[key][1])
    assert merged.sha256 == LoraWeights(ad.base_model, ad.targets, ad.factors).sha256


def test_truncated_merge_is_the_best_rank_k_approximation():
    adapters = [random_lora(TARGETS, rank=4, seed=i) for i in range(5)]
    weights = [1.0, 0.5, -0.25, 2.0, 0.1]
    merged, report = merge(adapters, weights, max_rank=6)
    for key in merged.keys:
        dense = dense_sum(adapters, weights, key)
        k = min(6, min(dense.shape))
        best, s = best_rank_k(dense, k)
        assert merged.ranks[key] == k
        assert rel(merged.delta(key), best) < 1e-9
        expected_err = math.sqrt(float((s[k:] ** 2).sum() / (s**2).sum()))
        assert report.rel_errors[key] == pytest.approx(expected_err, rel=1e-9, abs=1e-12)
        assert rel(merged.delta(key), dense) == pytest.approx(expected_err, rel=1e-6, abs=1e-12)
    assert report.stacked_ranks[merged.keys[0]] == 20


def test_recompress_with_enough_rank_is_exact_and_drops_zero_directions():
    ad = random_lora(TARGETS, rank=3)
    doubled, _ = merge([ad, ad], [0.5, 0.5])  # rank 6 stack of a rank-3 ΔW
    small, errors = recompress(doubled, max_rank=64)
    for key in ad.keys:
        assert small.ranks[key] == 3
        assert rel(small.delta(key), ad.delta(key)) < 1e-12
        assert errors[key] < 1e-7


def test_recompress_float32_is_accurate():
    ads = [random_lora(TARGETS, rank=4, seed=i, dtype=torch.float32) for i in range(3)]
    merged, report = merge(ads, [1.0, 1.0, 1.0], max_rank=12)
    for key in merged.keys:
        assert merged.factors[key][0].dtype == torch.float32
        assert rel(merged.delta(key).double(), dense_sum(ads, [1, 1, 1], key).double()) < 1e-5


@pytest.mark.parametrize("weights, match", [
    ([0.0, 0.0], "all merge weights are zero"),
    ([1.0], "2 adapters but 1 weights"),
    ([float("nan"), 1.0], "finite"),
    ([float("inf"), 1.0], "finite"),
])
def test_bad_weights_are_refused(weights, match):
    ads = [random_lora(TARGETS, seed=i) for i in range(2)]
    with pytest.raises(HypernetError, match=match):
        merge(ads, weights)


def test_negative_only_weights_are_fine():
    ads = [random_lora(TARGETS, seed=i) for i in range(2)]
    merged, _ = merge(ads, [-1.0, -0.5])
    key = merged.keys[0]
    assert rel(merged.delta(key), dense_sum(ads, [-1.0, -0.5], key)) < 1e-12


def test_empty_list_and_mismatched_adapters_are_refused():
    with pytest.raises(HypernetError, match="empty"):
        merge([], [])
    a = random_lora(TARGETS)
    other_shapes = random_lora(synthetic_targets([(24, 24), (24, 12)], layers=2))
    other_base = random_lora(TARGETS, base_model="another-model")
    with pytest.raises(HypernetError, match="differs in path or shape"):
        merge([a, other_shapes], [1.0, 1.0])  # fewer targets are fine: test_hypernet_ema covers that
    with pytest.raises(HypernetError, match="base model"):
        merge([a, other_base], [1.0, 1.0])
    with pytest.raises(HypernetError, match="max_rank"):
        merge([a], [1.0], max_rank=0)


def test_all_zero_adapter_recompresses_to_rank_one_zero():
    ad = random_lora(TARGETS, rank=2, scale=0.0)
    out, errors = recompress(ad, max_rank=4)
    for key in out.keys:
        assert out.ranks[key] == 1
        assert torch.count_nonzero(out.delta(key)) == 0
        assert errors[key] == 0.0


@settings(max_examples=40, deadline=None)
@given(
    fin=st.integers(1, 10), fout=st.integers(1, 10),
    ranks=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    weights=st.lists(st.floats(-2, 2, allow_nan=False), min_size=4, max_size=4),
    max_rank=st.one_of(st.none(), st.integers(1, 8)),
    seed=st.integers(0, 1000),
)
def test_merge_properties(fin, fout, ranks, weights, max_rank, seed):
    targets = synthetic_targets([(fin, fout)])
    ads = [random_lora(targets, rank=r, seed=seed + i) for i, r in enumerate(ranks)]
    w = weights[:len(ads)]
    if all(x == 0.0 for x in w):
        with pytest.raises(HypernetError):
            merge(ads, w, max_rank=max_rank)
        return
    merged, report = merge(ads, w, max_rank=max_rank)
    key = targets[0].key
    a, b = merged.factors[key]
    r = a.shape[0]
    assert a.shape == (r, fin) and b.shape == (fout, r)
    stacked = sum(rk for rk, x in zip(ranks, w) if x != 0.0)
    assert report.stacked_ranks[key] == stacked
    dense = dense_sum(ads, w, key)
    if max_rank is None:
        assert r == stacked
        assert torch.allclose(merged.delta(key), dense, atol=1e-12)
        return
    assert 1 <= r <= max_rank
    assert r <= min(fin, fout, stacked) or r == 1
    s = torch.linalg.svdvals(dense)
    k = min(max_rank, len(s))
    # optimal: the error equals the tail of the singular values (Eckart–Young)
    tail = float(torch.sqrt((s[k:] ** 2).sum()))
    assert float(torch.linalg.norm(merged.delta(key) - dense)) == pytest.approx(tail, abs=1e-9)
    total = float(torch.linalg.norm(dense))
    if total > 1e-12:
        assert report.rel_errors[key] == pytest.approx(tail / total, abs=1e-7)


def test_recompress_factors_batched_matches_single():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 10, 7, generator=g, dtype=torch.float64)
    b = torch.randn(3, 5, 10, generator=g, dtype=torch.float64)
    batched = recompress_factors(a, b, 4)
    for i in range(3):
        na, nb, err = recompress_factors(a[i:i + 1], b[i:i + 1], 4)[0]
        assert torch.allclose(nb @ na, batched[i][1] @ batched[i][0], atol=1e-12)
        assert err == pytest.approx(batched[i][2])


# --- randomized recompression -----------------------------------------------------------------------------

def low_rank_plus_noise(shape, n_noise, seed=0, dtype=torch.float64):
    """A strong rank-4 adapter plus n_noise weak rank-8 ones: a spectrum with a gap after 4, then a tail."""
    targets = synthetic_targets([shape], layers=3)
    signal = random_lora(targets, rank=4, seed=seed, scale=1.0, dtype=dtype)
    noise = [random_lora(targets, rank=8, seed=seed + 1 + i, scale=0.05, dtype=dtype) for i in range(n_noise)]
    return [signal, *noise], [1.0] + [0.5] * n_noise


# (64, 64) with 3 noise adapters: stacked rank 28, R·(in+out) < in·out, the factored route;
# (48, 40) with 6: stacked rank 52, the dense-ΔW route.
@pytest.mark.parametrize("shape, n_noise", [((64, 64), 3), ((48, 40), 6)])
@pytest.mark.parametrize("max_rank", [4, 6])
def test_randomized_is_near_optimal_and_reports_its_true_error(shape, n_noise, max_rank):
    adapters, weights = low_rank_plus_noise(shape, n_noise)
    merged, report = merge(adapters, weights, max_rank=max_rank, method="randomized", seed=3)
    for key in merged.keys:
        dense = dense_sum(adapters, weights, key)
        s = torch.linalg.svdvals(dense)
        optimal = math.sqrt(float((s[max_rank:] ** 2).sum() / (s**2).sum()))
        actual = rel(merged.delta(key), dense)
        assert merged.ranks[key] == max_rank
        assert actual <= 1.05 * optimal + 1e-6
        assert report.rel_errors[key] == pytest.approx(actual, rel=1e-6, abs=1e-9)
        assert report.methods[key] == "randomized"


def test_randomized_is_exact_when_the_stacked_rank_fits():
    adapters = [random_lora(TARGETS, rank=3, seed=i) for i in range(3)]
    weights = [1.0, -0.5, 2.0]
    merged, report = merge(adapters, weights, max_rank=9, method="randomized")
    for key in merged.keys:
        assert rel(merged.delta(key), dense_sum(adapters, weights, key)) < 1e-10
        assert report.rel_errors[key] < 1e-7


def test_randomized_float32_error_is_accurate():
    adapters, weights = low_rank_plus_noise((48, 40), 6, dtype=torch.float32)
    merged, report = merge(adapters, weights, max_rank=4, method="randomized")
    for key in merged.keys:
        dense = sum(w * ad.delta(key).double() for ad, w in zip(adapters, weights))
        assert merged.factors[key][0].dtype == torch.float32
        assert report.rel_errors[key] == pytest.approx(rel(merged.delta(key).double(), dense), abs=1e-5)


def test_randomized_is_deterministic_for_a_seed():
    adapters, weights = low_rank_plus_noise((48, 40), 6)
    first, r1 = merge(adapters, weights, max_rank=5, method="randomized", seed=7)
    again, r2 = merge(adapters, weights, max_rank=5, method="randomized", seed=7)
    other, _ = merge(adapters, weights, max_rank=5, method="randomized", seed=8)
    assert first.sha256 == again.sha256 and r1.rel_errors == r2.rel_errors
    assert first.sha256 != other.sha256  # another test matrix: other rounding, same subspace up to the tail


def test_auto_uses_randomized_only_for_wide_cores():
    assert choose_method("auto", 800, 576, 576, 64) == "randomized"  # 100 adapters of rank 8
    assert choose_method("auto", 72, 576, 576, 64) == "exact"  # an EMA step: rank 64 + 8
    assert choose_method("auto", 800, 576, 100, 64) == "exact"  # the core is only 100 wide
    assert choose_method("exact", 800, 576, 576, 64) == "exact"
    assert choose_method("auto", 200, 576, 576, 4) == "randomized"
    assert choose_method("auto", 100, 576, 576, 4) == "exact"  # small cores: exact costs nothing
    adapters, weights = low_rank_plus_noise((48, 40), 6)
    _, report = merge(adapters, weights, max_rank=4)
    assert set(report.methods.values()) == {"exact"}


def test_recompress_methods_agree_where_both_are_exact():
    ad = random_lora(TARGETS, rank=5)
    exact, e1 = recompress(ad, max_rank=8, method="exact")
    rand, e2 = recompress(ad, max_rank=8, method="randomized")
    for key in ad.keys:
        assert rel(rand.delta(key), exact.delta(key)) < 1e-10
        assert e1[key] < 1e-7 and e2[key] < 1e-7


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_rank=4, method="svd"), "method must be one of"),
    (dict(max_rank=0, method="randomized"), "max_rank"),
    (dict(max_rank=2.5), "max_rank"),
])
def test_bad_recompression_arguments_are_refused(kwargs, match):
    ads = [random_lora(TARGETS, seed=i) for i in range(2)]
    with pytest.raises(HypernetError, match=match):
        merge(ads, [1.0, 1.0], **kwargs)
    with pytest.raises(HypernetError, match=match):
        recompress(ads[0], **kwargs)
    a, b = torch.randn(1, 4, 6, dtype=torch.float64), torch.randn(1, 5, 4, dtype=torch.float64)
    with pytest.raises(HypernetError, match=match):
        recompress_factors(a, b, **kwargs)
