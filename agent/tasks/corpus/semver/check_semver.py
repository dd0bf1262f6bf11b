import pytest
from semver import Version, bump, compare, is_valid, latest, parse, satisfies_caret


def test_parse_release():
    assert parse("1.2.3") == Version(1, 2, 3)


def test_parse_pre_release_and_spaces():
    assert parse(" 2.0.0-rc.1 ") == Version(2, 0, 0, "rc.1")


def test_parse_rejects_garbage():
    with pytest.raises(ValueError):
        parse("1.2")
    with pytest.raises(ValueError):
        parse("v1.2.3")


def test_str_round_trip():
    assert str(parse("1.0.0-alpha")) == "1.0.0-alpha"
    assert str(parse("3.4.5")) == "3.4.5"


def test_compare_numeric_not_lexical():
    assert compare("1.10.0", "1.9.0") == 1
    assert compare("1.9.0", "1.10.0") == -1


def test_compare_equal():
    assert compare("1.2.3", "1.2.3") == 0


def test_compare_pre_release_sorts_before_release():
    assert compare("1.0.0-rc.1", "1.0.0") == -1
    assert compare("1.0.0", "1.0.0-rc.1") == 1


def test_compare_pre_release_parts():
    assert compare("1.0.0-alpha.2", "1.0.0-alpha.10") == -1
    assert compare("1.0.0-alpha", "1.0.0-beta") == -1
    assert compare("1.0.0-2", "1.0.0-alpha") == -1


def test_bump_parts():
    assert bump("1.2.3", "major") == "2.0.0"
    assert bump("1.2.3", "minor") == "1.3.0"
    assert bump("1.2.3-rc.1", "patch") == "1.2.4"


def test_bump_rejects_unknown_part():
    with pytest.raises(ValueError):
        bump("1.2.3", "build")


def test_satisfies_caret():
    assert satisfies_caret("1.4.0", "1.2.0")
    assert satisfies_caret("1.2.0", "1.2.0")
    assert not satisfies_caret("2.0.0", "1.2.0")
    assert not satisfies_caret("1.1.9", "1.2.0")


def test_latest():
    assert latest(["1.0.0", "1.10.0", "1.2.0"]) == "1.10.0"
    with pytest.raises(ValueError):
        latest([])


def test_is_valid():
    assert is_valid("1.2.3-rc.1")
    assert not is_valid("1.2")
