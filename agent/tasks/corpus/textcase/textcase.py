"""Convert identifiers and titles between naming styles."""

from __future__ import annotations

import re

SLUG_MAX_LENGTH = 50
SMALL_WORDS = frozenset({"a", "an", "and", "of", "the", "to", "in", "on"})
WORD_RE = re.compile(r"[A-Za-z0-9]+")


def slugify(text: str, max_length: int = SLUG_MAX_LENGTH) -> str:
    """Return a lowercase, hyphen-separated slug of at most max_length characters."""
    words = [word.lower() for word in WORD_RE.findall(text)]
    slug = "-".join(words)
    if len(slug) <= max_length:
        return slug
    return slug[:max_length].rstrip("-")


def camel_to_snake(name: str) -> str:
    """Convert camelCase or PascalCase to snake_case."""
    result = []
    for index, char in enumerate(name):
        if char.isupper() and index > 0 and not name[index - 1].isupper():
            result.append("_")
        result.append(char.lower())
    return "".join(result)


def snake_to_camel(name: str, upper_first: bool = False) -> str:
    """Convert snake_case to camelCase, or PascalCase when upper_first is True."""
    parts = [part for part in name.split("_") if part]
    if not parts:
        return ""
    head = parts[0].capitalize() if upper_first else parts[0].lower()
    return head + "".join(part.capitalize() for part in parts[1:])


def title_case(text: str) -> str:
    """Capitalise each word except small words that are not first or last."""
    words = text.split()
    titled = []
    for index, word in enumerate(words):
        is_edge = index == 0 or index == len(words) - 1
        if word.lower() in SMALL_WORDS and not is_edge:
            titled.append(word.lower())
        else:
            titled.append(word[:1].upper() + word[1:].lower())
    return " ".join(titled)


def count_words(text: str) -> int:
    """Count the alphanumeric words in text."""
    return len(WORD_RE.findall(text))


def initials(name: str) -> str:
    """Return the upper-case initials of the words of a name, such as 'ADL'."""
    if not name.strip():
        raise ValueError("name is empty")
    return "".join(word[0].upper() for word in name.split())
