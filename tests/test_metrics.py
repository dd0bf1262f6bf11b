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
