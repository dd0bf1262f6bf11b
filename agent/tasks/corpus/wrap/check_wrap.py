import pytest
from wrap import center, fill, indent, justify, truncate, wrap


def test_wrap_breaks_at_width():
    assert wrap("the quick brown fox jumps", 10) == ["the quick", "brown fox", "jumps"]


def test_wrap_exact_fit():
    assert wrap("ab cd", 5) == ["ab cd"]


def test_wrap_long_word_alone():
    assert wrap("a extraordinarily b", 5) == ["a", "extraordinarily", "b"]


def test_wrap_empty_text():
    assert wrap("   ") == []


def test_wrap_rejects_zero_width():
    with pytest.raises(ValueError):
        wrap("text", 0)


def test_justify_spreads_spaces_left_first():
    assert justify("a b c", 8) == "a   b  c"


def test_justify_single_word_unchanged():
    assert justify("word", 10) == "word"


def test_fill_justifies_all_but_last_line():
    assert fill("aa bb cc dd", 6) == "aa  bb\ncc dd"


def test_truncate():
    assert truncate("hello world", 20) == "hello world"
    assert truncate("hello world", 8) == "hello..."
    assert truncate("hello world", 2) == ".."


def test_truncate_exact_length_unchanged():
    assert truncate("hello", 5) == "hello"


def test_indent_skips_blank_lines():
    assert indent(["a", "", "b"], "> ") == ["> a", "", "> b"]


def test_center():
    assert center("ab", 6) == "  ab  "
    assert center("ab", 5, "*") == "*ab**"
    assert center("abc", 2) == "abc"
    with pytest.raises(ValueError):
        center("a", 3, "--")
