import pytest
from textcase import camel_to_snake, count_words, initials, slugify, snake_to_camel, title_case


def test_slugify_basic():
    assert slugify("Hello, World!") == "hello-world"


def test_slugify_truncates_without_trailing_hyphen():
    assert slugify("aaaa bbbb cccc", 10) == "aaaa-bbbb"


def test_slugify_empty():
    assert slugify("!!!") == ""


def test_camel_to_snake():
    assert camel_to_snake("parseHttpRequest") == "parse_http_request"
    assert camel_to_snake("PascalCase") == "pascal_case"
    assert camel_to_snake("simple") == "simple"


def test_camel_to_snake_keeps_acronyms_together():
    assert camel_to_snake("HTTPServer") == "httpserver"


def test_snake_to_camel():
    assert snake_to_camel("parse_http_request") == "parseHttpRequest"
    assert snake_to_camel("make_it", upper_first=True) == "MakeIt"
    assert snake_to_camel("__") == ""


def test_title_case_small_words():
    assert title_case("the lord of the rings") == "The Lord of the Rings"
    assert title_case("a tale to") == "A Tale To"


def test_count_words():
    assert count_words("one, two;three") == 3
    assert count_words("") == 0


def test_initials():
    assert initials("ada lovelace byron") == "ALB"
    with pytest.raises(ValueError):
        initials("  ")
