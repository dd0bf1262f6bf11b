import pytest
from ledger import Account, InsufficientFunds, format_cents, parse_amount, statement, transfer, try_withdraw


def test_deposit_increases_balance():
    account = Account("ann")
    assert account.deposit(500) == 500
    assert account.history == [("deposit", 500)]


def test_deposit_rejects_non_positive():
    with pytest.raises(ValueError):
        Account("ann").deposit(0)


def test_withdraw_decreases_balance():
    account = Account("ann", 1000)
    assert account.withdraw(300) == 700


def test_withdraw_whole_balance_allowed():
    account = Account("ann", 300)
    assert account.withdraw(300) == 0


def test_withdraw_more_than_balance_fails():
    account = Account("ann", 100)
    with pytest.raises(InsufficientFunds):
        account.withdraw(101)
    assert account.balance == 100


def test_withdraw_rejects_negative():
    with pytest.raises(ValueError):
        Account("ann", 100).withdraw(-5)


def test_transfer_moves_money():
    source, target = Account("ann", 1000), Account("bob")
    transfer(source, target, 250)
    assert (source.balance, target.balance) == (750, 250)


def test_failed_transfer_changes_nothing():
    source, target = Account("ann", 100), Account("bob")
    with pytest.raises(InsufficientFunds):
        transfer(source, target, 500)
    assert (source.balance, target.balance) == (100, 0)


def test_format_cents():
    assert format_cents(1205) == "12.05"
    assert format_cents(-1205) == "-12.05"
    assert format_cents(7) == "0.07"


def test_parse_amount():
    assert parse_amount("12.5") == 1250
    assert parse_amount("12.05") == 1205
    assert parse_amount("3") == 300


def test_parse_amount_rejects_bad_input():
    for text in ("", "1.234", "a.b", "-1"):
        with pytest.raises(ValueError):
            parse_amount(text)


def test_statement_lines():
    account = Account("ann", 1000)
    account.deposit(500)
    account.withdraw(200)
    lines = statement(account).splitlines()
    assert lines[0] == "Statement for ann"
    assert lines[1].endswith("10.00")
    assert lines[2].split() == ["deposit", "5.00", "15.00"]
    assert lines[3].split() == ["withdraw", "2.00", "13.00"]
    assert lines[4].split() == ["closing", "13.00"]


def test_try_withdraw():
    account = Account("ann", 100)
    assert try_withdraw(account, 60)
    assert not try_withdraw(account, 60)
    assert account.balance == 40
