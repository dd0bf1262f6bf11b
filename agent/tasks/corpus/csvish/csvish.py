"""A small CSV reader and writer: commas, double-quoted fields and doubled quotes."""

from __future__ import annotations

DELIMITER = ","
QUOTE = '"'


def parse_line(line: str) -> list[str]:
    """Split one line into fields, honouring quotes and doubled quotes inside them."""
    fields: list[str] = []
    current: list[str] = []
    in_quotes = False
    index = 0
    while index < len(line):
        char = line[index]
        if in_quotes:
            if char == QUOTE and line[index + 1 : index + 2] == QUOTE:
                current.append(QUOTE)
                index += 1
            elif char == QUOTE:
                in_quotes = False
            else:
                current.append(char)
        elif char == QUOTE:
            in_quotes = True
        elif char == DELIMITER:
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    if in_quotes:
        raise ValueError("unterminated quoted field")
    fields.append("".join(current))
    return fields


def parse(text: str) -> list[list[str]]:
    """Parse a document into rows of fields, skipping blank lines."""
    return [parse_line(line) for line in text.splitlines() if line.strip()]


def quote_field(field: str) -> str:
    """Quote a field if it holds a delimiter or a quote, or has surrounding spaces."""
    needs_quotes = DELIMITER in field or QUOTE in field or field != field.strip()
    if not needs_quotes:
        return field
    return QUOTE + field.replace(QUOTE, QUOTE * 2) + QUOTE


def dump(rows: list[list[str]]) -> str:
    """Serialise rows one per line, quoting fields where needed."""
    return "\n".join(DELIMITER.join(quote_field(field) for field in row) for row in rows)


def to_dicts(text: str) -> list[dict[str, str]]:
    """Parse a document whose first row is the header into one dictionary per record."""
    rows = parse(text)
    if not rows:
        return []
    header, *records = rows
    for number, record in enumerate(records, start=2):
        if len(record) != len(header):
            raise ValueError(f"row {number} has {len(record)} fields, expected {len(header)}")
    return [dict(zip(header, record)) for record in records]


def column(text: str, name: str) -> list[str]:
    """Return the values of one named column."""
    records = to_dicts(text)
    if records and name not in records[0]:
        raise KeyError(name)
    return [record[name] for record in records]


def parse_or_empty(text: str) -> list[list[str]]:
    """Parse a document, returning no rows when a quoted field is left open."""
    try:
        return parse(text)
    except ValueError:
        return []
