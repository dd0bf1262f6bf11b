"""Quality metrics behave like metrics: identical text scores 1, related beats unrelated."""

from agent.learn.metrics import bertscore_f1, token_f1


def test_token_f1():
    assert token_f1("fix: handle empty input", "fix: handle empty input") == 1.0
    assert token_f1("a b", "c d") == 0.0
    assert 0.0 < token_f1("fix the parser bug", "fix the lexer bug") < 1.0
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0


def test_bertscore_orders_similarity():
    ref = "fix: return the upper bound when the value exceeds it"
    same = bertscore_f1(ref, ref)
    close = bertscore_f1("fix: clamp now returns the high bound for values above it", ref)
    far = bertscore_f1("The weather in Paris is sunny with a light breeze.", ref)
    assert abs(same - 1.0) < 1e-4
    assert close > far


def test_the_eval_interval_resamples_skills_not_answers():
    """Two skills of three answers each, one skill all right, one all wrong: drawn by skill the mean is
    0, 0.5 or 1, so the 95 % interval spans nearly all of [0, 1]; drawn by answer it would be far narrower."""
    from agent.learn.metrics import cluster_bootstrap_ci

    values, skills = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0], ["a", "a", "a", "b", "b", "b"]
    lo, hi = cluster_bootstrap_ci(values, skills)
    assert lo == 0.0 and hi == 1.0
    lo, hi = cluster_bootstrap_ci(values, [str(i) for i in range(6)])  # every answer its own skill
    assert 0.0 < lo < 0.5 < hi < 1.0
    assert cluster_bootstrap_ci([0.4] * 5, list("abcde")) == [0.4, 0.4]
    assert cluster_bootstrap_ci(values, skills, seed=3) == cluster_bootstrap_ci(values, skills, seed=3)


def test_the_eval_table_carries_each_rows_interval():
    from agent.learn.evaluate import ItemResult, aggregate

    rows = [ItemResult(f"s{i % 4}", "code-review", f"t{i}", "none", False, score, 0.0, 0.0, [], "", 0.0)
            for i, score in enumerate([0.2, 0.4, 0.6, 0.8, 0.3, 0.5, 0.7, 0.9])]
    overall = aggregate(rows)["none"]["overall"]
    lo, hi = overall["check_score_ci95"]
    assert lo < overall["check_score"] < hi and 0 <= lo and hi <= 100


def test_the_eval_report_pairs_modes_on_the_items_both_answered():
    """parametric beats icl by 0.2 on every task while tasks differ widely in difficulty: paired, the
    difference is exactly 0.2 with a zero-width interval; a baseline that skipped a skill is compared on
    the rest only."""
    from agent.learn.evaluate import ItemResult, differences

    def row(mode, skill, task, score):
        return ItemResult(skill, "code-review", task, mode, False, score, 0.0, 0.0, [], "", 0.0)

    hard = {("s1", "t1"): 0.1, ("s1", "t2"): 0.5, ("s2", "t3"): 0.0, ("s3", "t4"): 0.7}
    rows = [row("icl", s, t, v) for (s, t), v in hard.items()]
    rows += [row("parametric", s, t, v + 0.2) for (s, t), v in hard.items()]
    rows += [row("oracle", s, t, 1.0) for (s, t) in hard if s != "s3"]
    diff = differences(rows)
    assert diff["parametric - icl"]["check_score"] == 20.0 and diff["parametric - icl"]["n"] == 4
    assert diff["parametric - icl"]["ci95"] == [20.0, 20.0]
    assert diff["oracle - icl"]["n"] == 3 and diff["oracle - parametric"]["n"] == 3
    assert list(diff) == ["parametric - icl", "oracle - icl", "oracle - parametric"]
