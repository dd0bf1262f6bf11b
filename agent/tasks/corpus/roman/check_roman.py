import pytest
from roman import add, from_roman, is_roman, roman_range, to_roman


def test_to_roman_simple_values():
    assert to_roman(1) == "I"
    assert to_roman(8) == "VIII"


def test_to_roman_subtractive_forms():
    assert to_roman(4) == "IV"
    assert to_roman(90) == "XC"
    assert to_roman(1994) == "MCMXCIV"


def test_to_roman_largest_value():
    assert to_roman(3999) == "MMMCMXCIX"


def test_to_roman_rejects_zero_and_too_large():
    with pytest.raises(ValueError):
        to_roman(0)
    with pytest.raises(ValueError):
        to_roman(4000)


def test_from_roman_round_trip():
    for number in (1, 4, 9, 14, 40, 99, 444, 2024, 3999):
        assert from_roman(to_roman(number)) == number


def test_from_roman_lowercase_and_spaces():
    assert from_roman(" xiv ") == 14


def test_from_roman_rejects_non_canonical():
    with pytest.raises(ValueError):
        from_roman("IIII")
    with pytest.raises(ValueError):
        from_roman("VX")


def test_from_roman_rejects_bad_characters_and_empty():
    with pytest.raises(ValueError):
        from_roman("XIZ")
    with pytest.raises(ValueError):
        from_roman("")


def test_is_roman():
    assert is_roman("MMXXIV")
    assert not is_roman("ABC")


def test_add_numerals():
    assert add("XIV", "VI") == "XX"


def test_roman_range_excludes_stop():
    assert roman_range(3, 6) == ["III", "IV", "V"]


def test_roman_range_empty_when_start_not_below_stop():
    assert roman_range(5, 5) == []
