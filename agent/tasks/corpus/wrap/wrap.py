"""Greedy word wrapping, justification and truncation of plain text."""

from __future__ import annotations

DEFAULT_WIDTH = 40
ELLIPSIS = "..."


def wrap(text: str, width: int = DEFAULT_WIDTH) -> list[str]:
    """Break text into lines of at most width characters; a longer word gets a line of its own."""
    if width < 1:
        raise ValueError("width must be positive")
    lines: list[str] = []
    current = ""
    for word in text.split():
        if not current:
            current = word
        elif len(current) + 1 + len(word) <= width:
            current = f"{current} {word}"
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines


def justify(line: str, width: int) -> str:
    """Widen the gaps between words so the line is exactly width characters long."""
    words = line.split()
    if len(words) < 2 or len(line) >= width:
        return line
    gap_count = len(words) - 1
    spaces = width - sum(len(word) for word in words)
    base, extra = divmod(spaces, gap_count)
    parts = []
    for index, word in enumerate(words[:-1]):
        parts.append(word + " " * (base + (1 if index < extra else 0)))
    parts.append(words[-1])
    return "".join(parts)


def fill(text: str, width: int = DEFAULT_WIDTH) -> str:
    """Wrap text and justify every line except the last."""
    lines = wrap(text, width)
    body = [justify(line, width) for line in lines[:-1]]
    return "\n".join(body + lines[-1:])


def truncate(text: str, limit: int) -> str:
    """Shorten text to at most limit characters, ending with an ellipsis when it was cut."""
    if len(text) <= limit:
        return text
    if limit <= len(ELLIPSIS):
        return ELLIPSIS[:limit]
    return text[: limit - len(ELLIPSIS)].rstrip() + ELLIPSIS


def indent(lines: list[str], prefix: str = "    ") -> list[str]:
    """Prefix every non-blank line, leaving blank lines empty."""
    return [prefix + line if line.strip() else "" for line in lines]


def center(text: str, width: int, fill_char: str = " ") -> str:
    """Center text in a field of width characters; extra padding goes to the right."""
    if len(fill_char) != 1:
        raise ValueError("fill_char must be a single character")
    padding = max(width - len(text), 0)
    left = padding // 2
    return fill_char * left + text + fill_char * (padding - left)
