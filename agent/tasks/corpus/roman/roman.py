"""Convert integers to Roman numerals and back."""

from __future__ import annotations

MIN_VALUE = 1
MAX_VALUE = 3999
SYMBOLS = (
    (1000, "M"), (900, "CM"), (500, "D"), (400, "CD"),
    (100, "C"), (90, "XC"), (50, "L"), (40, "XL"),
    (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"),
)
LETTER_VALUES = {symbol: value for value, symbol in SYMBOLS if len(symbol) == 1}


def to_roman(number: int) -> str:
    """Return the Roman numeral for an integer from 1 to 3999."""
    if not MIN_VALUE <= number <= MAX_VALUE:
        raise ValueError(f"{number} is outside {MIN_VALUE}..{MAX_VALUE}")
    parts = []
    remaining = number
    for value, symbol in SYMBOLS:
        count, remaining = divmod(remaining, value)
        parts.append(symbol * count)
    return "".join(parts)


def from_roman(numeral: str) -> int:
    """Return the integer value of a canonical Roman numeral."""
    text = numeral.strip().upper()
    if not text:
        raise ValueError("empty numeral")
    total = 0
    for index, char in enumerate(text):
        if char not in LETTER_VALUES:
            raise ValueError(f"invalid character {char!r}")
        value = LETTER_VALUES[char]
        following = text[index + 1 : index + 2]
        if following in LETTER_VALUES and LETTER_VALUES[following] > value:
            total -= value
        else:
            total += value
    if total < MIN_VALUE or to_roman(total) != text:
        raise ValueError(f"{numeral!r} is not a canonical numeral")
    return total


def is_roman(text: str) -> bool:
    """Return True if the text is a canonical Roman numeral."""
    try:
        from_roman(text)
    except ValueError:
        return False
    return True


def add(left: str, right: str) -> str:
    """Add two Roman numerals and return the sum as a numeral."""
    return to_roman(from_roman(left) + from_roman(right))


def roman_range(start: int, stop: int) -> list[str]:
    """Return the numerals for start, start + 1, ..., stop - 1."""
    if start >= stop:
        return []
    return [to_roman(number) for number in range(start, stop)]
