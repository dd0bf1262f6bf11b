import pytest
from calc import apply_operator, calculate, evaluate_postfix, safe_calculate, to_postfix, tokenize


def test_tokenize_numbers_and_operators():
    assert tokenize("12+3*(4-1)") == ["12", "+", "3", "*", "(", "4", "-", "1", ")"]


def test_tokenize_ignores_spaces():
    assert tokenize(" 7 /  2 ") == ["7", "/", "2"]


def test_tokenize_rejects_letters():
    with pytest.raises(ValueError):
        tokenize("2 + x")


def test_to_postfix_respects_precedence():
    assert to_postfix(["1", "+", "2", "*", "3"]) == ["1", "2", "3", "*", "+"]


def test_to_postfix_left_associative():
    assert to_postfix(["8", "-", "3", "-", "2"]) == ["8", "3", "-", "2", "-"]


def test_to_postfix_parentheses():
    assert to_postfix(["(", "1", "+", "2", ")", "*", "3"]) == ["1", "2", "+", "3", "*"]


def test_to_postfix_unbalanced():
    with pytest.raises(ValueError):
        to_postfix(["(", "1"])
    with pytest.raises(ValueError):
        to_postfix(["1", ")"])


def test_apply_operator_basic():
    assert apply_operator("+", 2, 3) == 5
    assert apply_operator("-", 2, 3) == -1
    assert apply_operator("*", 4, 3) == 12


def test_apply_operator_division_truncates_toward_zero():
    assert apply_operator("/", 7, 2) == 3
    assert apply_operator("/", -7, 2) == -3
    assert apply_operator("/", 7, -2) == -3


def test_apply_operator_division_by_zero():
    with pytest.raises(ZeroDivisionError):
        apply_operator("/", 1, 0)


def test_evaluate_postfix_errors():
    with pytest.raises(ValueError):
        evaluate_postfix(["1", "+"])
    with pytest.raises(ValueError):
        evaluate_postfix(["1", "2"])


def test_calculate_expressions():
    assert calculate("2 + 3 * 4") == 14
    assert calculate("(2 + 3) * 4") == 20
    assert calculate("10 - 4 - 3") == 3
    assert calculate("20 / 3") == 6


def test_safe_calculate():
    assert safe_calculate("6 / 3") == 2
    assert safe_calculate("1 / 0") is None
    assert safe_calculate("(1") is None
