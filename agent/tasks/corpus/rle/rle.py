"""Run-length encoding of strings: "aaab" <-> "3a1b"."""

from __future__ import annotations

import re

RUN_RE = re.compile(r"(\d+)(\D)")


def encode(text: str) -> str:
    """Encode runs of repeated characters as a count followed by the character."""
    if any(char.isdigit() for char in text):
        raise ValueError("digits cannot be run-length encoded")
    if not text:
        return ""
    pieces = []
    run_char = text[0]
    run_length = 1
    for char in text[1:]:
        if char == run_char:
            run_length += 1
        else:
            pieces.append(f"{run_length}{run_char}")
            run_char = char
            run_length = 1
    pieces.append(f"{run_length}{run_char}")
    return "".join(pieces)


def decode(encoded: str) -> str:
    """Expand an encoded string back into the original text."""
    if RUN_RE.sub("", encoded):
        raise ValueError(f"malformed run-length data: {encoded!r}")
    return "".join(char * int(count) for count, char in RUN_RE.findall(encoded))


def runs(text: str) -> list[tuple[str, int]]:
    """Return the (character, run length) pairs of the text, in order."""
    return [(char, int(count)) for count, char in RUN_RE.findall(encode(text))]


def longest_run(text: str) -> tuple[str, int]:
    """Return the character with the longest run and its length; the first run wins ties."""
    best = ("", 0)
    for char, length in runs(text):
        if length > best[1]:
            best = (char, length)
    return best


def ratio(text: str) -> float:
    """Return the encoded length divided by the original length (1.0 for empty text)."""
    if not text:
        return 1.0
    return len(encode(text)) / len(text)


def squeeze(text: str, keep: int) -> str:
    """Shorten every run to at most keep characters."""
    if keep < 0:
        raise ValueError("keep must not be negative")
    return "".join(char * min(length, keep) for char, length in runs(text))


def is_encoded(text: str) -> bool:
    """Return True if the text is well-formed run-length data."""
    try:
        decode(text)
    except ValueError:
        return False
    return True
