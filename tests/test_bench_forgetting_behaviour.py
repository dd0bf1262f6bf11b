"""The behavioural forgetting benchmark's pieces: the reference log-probability score on a tiny model, the
addition order (held-out skills where they are scored), and the proxy-vs-behaviour correlation."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from agent.learn.evaluate import reference_logprobs
from agent.runtime.base_model import load_model
from agent.synth.eval_items import make_eval_items
from bench.bench_forgetting_behaviour import correlation, order_skills, ranks
from hypernet.lora import LoraWeights
from hypernet.peft_io import model_targets
from tests.tiny import tiny_model_dir


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return load_model(tiny_model_dir(tmp_path_factory))


def adapter(loaded, scale: float, seed: int = 0) -> LoraWeights:
    g = torch.Generator().manual_seed(seed)
    targets = [t for t in model_targets(loaded.model) if t.module in ("q_proj", "v_proj")]
    return LoraWeights(loaded.name, targets, {t.key: (torch.randn(4, t.in_features, generator=g),
                                                      scale * torch.randn(t.out_features, 4, generator=g))
                                              for t in targets})


def test_reference_logprobs_score_the_reference_tokens_under_the_adapter(loaded, one_thread):
    items = make_eval_items(split="heldout", subtask="code-review", n=1, seed=0)[:2]
    base = reference_logprobs(loaded, items, None)
    assert len(base) == 2 and all(n > 0 and s < 0 for s, n in base)
    # a zero B changes nothing: the score is the base model's exactly
    assert reference_logprobs(loaded, items, adapter(loaded, 0.0)) == pytest.approx(base, rel=1e-5)
    moved = reference_logprobs(loaded, items, adapter(loaded, 1.0))
    assert [n for _, n in moved] == [n for _, n in base]  # the same reference tokens are scored
    assert all(abs(m - b) > 1e-3 for (m, _), (b, _) in zip(moved, base))
    assert reference_logprobs(loaded, items, None) == base  # the adapter is removed afterwards


def skill(name: str, subtask: str, split: str) -> SimpleNamespace:
    return SimpleNamespace(name=name, subtask=subtask, split=split)


def test_scored_places_get_held_out_skills_in_subtask_turns():
    heldout = [skill(f"{st}-{i}", st, "heldout") for st in ("a", "b", "c") for i in range(5)]
    train = [skill(f"t{i}", "a", "train") for i in range(60)]
    order = order_skills(heldout, train, additions=50, track=4)
    assert len(order) == 50 and len({s.name for s in order}) == 50
    assert [s.name for s in order[:4]] == ["a-0", "b-0", "c-0", "a-1"]
    assert {t for t, s in enumerate(order, 1) if s.split == "heldout"} == {1, 2, 3, 4, 10, 25, 50}
    with pytest.raises(SystemExit, match="held-out skills"):
        order_skills(heldout[:5], train, additions=50, track=4)
    with pytest.raises(SystemExit, match="training skills"):
        order_skills(heldout, train[:10], additions=50, track=4)


def test_correlation_of_ranks_is_spearman():
    xs, ys = [1.0, 2.0, 3.0, 4.0], [10.0, 40.0, 90.0, 160.0]  # monotone, not linear
    assert correlation(ranks(xs), ranks(ys)) == pytest.approx(1.0)
    assert correlation(xs, ys) < 1.0
    assert correlation(xs, [-y for y in ys]) < -0.9
    assert correlation([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None  # constant: undefined, not 0


def test_retention_is_gain_weighted_over_skills_that_helped_with_a_bootstrap_interval():
    from bench.bench_forgetting_behaviour import retention

    skills = {"a": {"gain": 0.5, "right_after": 1.0, "own": 2.0},
              "b": {"gain": 0.02, "right_after": 0.01, "own": 0.5},  # a ratio of 200 % that must not dominate
              "c": {"gain": 0.3, "right_after": -0.2, "own": 0.4}}  # did not help right after: left out
    r = retention(skills)
    assert r["skills"] == 2 and r["retained_pct"] == pytest.approx(100 * 0.52 / 1.01, abs=0.1)
    assert r["forgetting_points"] == pytest.approx(100 - r["retained_pct"], abs=0.11)
    assert r["of_own_pct"] == pytest.approx(100 * 0.52 / 2.5, abs=0.1)
    lo, hi = r["ci95"]
    assert lo <= r["retained_pct"] <= hi and lo >= 50 - 0.1 and hi <= 200 + 0.1  # within the per-skill extremes
    assert retention({"c": skills["c"]})["retained_pct"] is None
