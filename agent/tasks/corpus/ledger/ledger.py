"""A bank account ledger with deposits, withdrawals, transfers and statements."""

from __future__ import annotations

from dataclasses import dataclass, field

CENTS_PER_UNIT = 100
OVERDRAFT_LIMIT = 0


class InsufficientFunds(Exception):
    """Raised when a withdrawal would take the balance below the overdraft limit."""


@dataclass
class Account:
    owner: str
    balance: int = 0
    history: list[tuple[str, int]] = field(default_factory=list)

    def deposit(self, amount: int) -> int:
        """Add a positive amount of cents and return the new balance."""
        if amount <= 0:
            raise ValueError("a deposit must be positive")
        self.balance += amount
        self.history.append(("deposit", amount))
        return self.balance

    def withdraw(self, amount: int) -> int:
        """Remove a positive amount of cents and return the new balance."""
        if amount <= 0:
            raise ValueError("a withdrawal must be positive")
        if self.balance - amount < -OVERDRAFT_LIMIT:
            raise InsufficientFunds(f"{self.owner} cannot withdraw {amount}")
        self.balance -= amount
        self.history.append(("withdraw", amount))
        return self.balance


def transfer(source: Account, target: Account, amount: int) -> None:
    """Move money between accounts; nothing changes if the withdrawal fails."""
    source.withdraw(amount)
    target.deposit(amount)


def format_cents(cents: int) -> str:
    """Format cents as a signed amount with two decimals, such as -12.05."""
    sign = "-" if cents < 0 else ""
    whole, rest = divmod(abs(cents), CENTS_PER_UNIT)
    return f"{sign}{whole}.{rest:02d}"


def parse_amount(text: str) -> int:
    """Parse an amount such as 12.5 or 12.05 into cents."""
    whole, _, fraction = text.strip().partition(".")
    if not whole.isdigit() or len(fraction) > 2 or (fraction and not fraction.isdigit()):
        raise ValueError(f"not an amount: {text!r}")
    return int(whole) * CENTS_PER_UNIT + int(fraction.ljust(2, "0") or "0")


def statement(account: Account) -> str:
    """Return one line per transaction with a running balance, then the closing balance."""
    net = sum(amount if kind == "deposit" else -amount for kind, amount in account.history)
    running = account.balance - net
    lines = [f"Statement for {account.owner}", f"{'opening':<10}{format_cents(running):>22}"]
    for kind, amount in account.history:
        running += amount if kind == "deposit" else -amount
        lines.append(f"{kind:<10}{format_cents(amount):>10}{format_cents(running):>12}")
    lines.append(f"{'closing':<10}{format_cents(account.balance):>22}")
    return "\n".join(lines)


def try_withdraw(account: Account, amount: int) -> bool:
    """Withdraw if the funds allow it; return whether the withdrawal happened."""
    try:
        account.withdraw(amount)
    except InsufficientFunds:
        return False
    return True
