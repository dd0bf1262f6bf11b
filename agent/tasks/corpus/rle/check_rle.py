import pytest
from rle import decode, encode, is_encoded, longest_run, ratio, runs, squeeze


def test_encode_runs():
    assert encode("aaabcc") == "3a1b2c"


def test_encode_empty():
    assert encode("") == ""


def test_encode_single_character():
    assert encode("x") == "1x"


def test_encode_rejects_digits():
    with pytest.raises(ValueError):
        encode("a1")


def test_decode_round_trip():
    for text in ("", "a", "aab", "zzzzzzzzzzzz", "ab ab"):
        assert decode(encode(text)) == text


def test_decode_multi_digit_counts():
    assert decode("12a1b") == "a" * 12 + "b"


def test_decode_rejects_malformed():
    with pytest.raises(ValueError):
        decode("3")
    with pytest.raises(ValueError):
        decode("a3")


def test_runs_pairs():
    assert runs("aabccc") == [("a", 2), ("b", 1), ("c", 3)]


def test_longest_run_first_wins_ties():
    assert longest_run("aabb") == ("a", 2)
    assert longest_run("abbb") == ("b", 3)
    assert longest_run("") == ("", 0)


def test_ratio():
    assert ratio("") == 1.0
    assert ratio("aaaa") == 0.5
    assert ratio("ab") == 2.0


def test_squeeze():
    assert squeeze("aaabccc", 2) == "aabcc"
    assert squeeze("aaa", 0) == ""
    with pytest.raises(ValueError):
        squeeze("a", -1)


def test_is_encoded():
    assert is_encoded("3a1b")
    assert is_encoded("")
    assert not is_encoded("a3")
