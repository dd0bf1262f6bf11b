import pytest
from csvish import column, dump, parse, parse_line, parse_or_empty, quote_field, to_dicts


def test_parse_line_plain_fields():
    assert parse_line("a,b,c") == ["a", "b", "c"]


def test_parse_line_empty_fields():
    assert parse_line(",x,") == ["", "x", ""]
    assert parse_line("") == [""]


def test_parse_line_quoted_delimiter():
    assert parse_line('"a,b",c') == ["a,b", "c"]


def test_parse_line_doubled_quote():
    assert parse_line('"say ""hi""",x') == ['say "hi"', "x"]


def test_parse_line_unterminated_quote():
    with pytest.raises(ValueError):
        parse_line('"abc,d')


def test_parse_skips_blank_lines():
    assert parse("a,b\n\n  \nc,d\n") == [["a", "b"], ["c", "d"]]


def test_quote_field():
    assert quote_field("plain") == "plain"
    assert quote_field("a,b") == '"a,b"'
    assert quote_field('x"y') == '"x""y"'
    assert quote_field(" pad") == '" pad"'


def test_dump_round_trip():
    rows = [["name", "note"], ["Ann", 'likes "tea", cake'], ["Bob", ""]]
    assert parse(dump(rows)) == rows


def test_to_dicts():
    assert to_dicts("id,name\n1,Ann\n2,Bob") == [{"id": "1", "name": "Ann"}, {"id": "2", "name": "Bob"}]
    assert to_dicts("") == []


def test_to_dicts_rejects_short_row():
    with pytest.raises(ValueError, match="row 3"):
        to_dicts("a,b\n1,2\n3")


def test_column():
    assert column("id,name\n1,Ann\n2,Bob", "name") == ["Ann", "Bob"]
    with pytest.raises(KeyError):
        column("id\n1", "name")


def test_parse_or_empty():
    assert parse_or_empty("a,b") == [["a", "b"]]
    assert parse_or_empty('"open') == []
