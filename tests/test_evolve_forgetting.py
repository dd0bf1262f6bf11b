"""The continual-learning measurement: low-rank inner products and the per-addition retention curves."""

from __future__ import annotations

import pytest

from agent.learn import forgetting as fg
from hypernet import norms


pytestmark = pytest.mark.usefixtures("one_thread")


def skills(n=6, **kw):
    return fg.synthetic_skills(n, fg.synthetic_targets(layers=1, hidden=48, kv=16), rank=2, **kw)


def test_low_rank_inner_products_match_dense():
    a, b = skills(2, shared=0.5)
    dense = sum(float((a.delta(k) * b.delta(k)).sum()) for k in a.keys)
    assert norms.inner(a, b) == pytest.approx(dense, rel=1e-6)
    diff = sum(float(((a.delta(k) - b.delta(k)) ** 2).sum()) for k in a.keys) ** 0.5
    assert norms.diff_norm(a, b) == pytest.approx(diff, rel=1e-6)
    assert norms.cosine(a, a) == pytest.approx(1.0)


def test_retention_follows_the_ema_weights_without_truncation():
    sk = skills(6, shared=0.0)
    curves = fg.measure(sk, [fg.Strategy("ema-0.5", "ema", 0.5), fg.Strategy("sum", "sum"), fg.Strategy("mean", "mean")],
                        max_rank=64)
    ema, total, mean = curves
    # unrelated skills are nearly orthogonal: the retention coefficient is the merge weight
    final = ema.final("retention")
    expected = [0.5 ** 5] + [0.5 * 0.5 ** (5 - i) for i in range(1, 6)]
    assert final == pytest.approx(expected, abs=0.08)
    assert total.final("retention") == pytest.approx([1.0] * 6, abs=0.1)
    assert mean.final("retention") == pytest.approx([1 / 6] * 6, abs=0.05)
    # cosine is scale-free: the sum and the mean keep every skill alike
    assert total.final("cosine") == pytest.approx(mean.final("cosine"), abs=1e-6)
    assert ema.steps[-1].summary("cosine")["newest"] > mean.steps[-1].summary("cosine")["newest"]


def test_choose_beta_and_a_plugged_in_scorer():
    sk = skills(8, shared=0.3)
    calls = []

    def adherence(persistent, i, skill):  # stands in for "run the model with P on skill i's probe"
        calls.append(i)
        return norms.cosine(skill, persistent)

    curves = fg.measure(sk, fg.default_strategies((0.3, 0.8, 0.99)), max_rank=8,
                        scorers={"cosine": fg.SCORERS["cosine"], "adherence": adherence})
    assert len(calls) == 5 * sum(range(1, 9))  # every skill so far, after every addition, per strategy
    beta, scores = fg.choose_beta(curves)
    assert beta in (0.3, 0.8, 0.99) and set(scores) == {"ema-0.3", "ema-0.8", "ema-0.99", "sum", "mean"}
    rep = fg.report(curves, metrics=("cosine", "adherence"))
    assert rep["ema-0.8"]["steps"][-1]["t"] == 8 and rep["ema-0.8"]["steps"][-1]["rank"] <= 8
