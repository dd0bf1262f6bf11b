"""Tokenize and evaluate integer arithmetic with + - * / and parentheses."""

from __future__ import annotations

import re

TOKEN_RE = re.compile(r"\s*(?:(\d+)|(.))")
PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
PARENS = "()"


def tokenize(text: str) -> list[str]:
    """Split an expression into number, operator and parenthesis tokens."""
    tokens = []
    for number, other in TOKEN_RE.findall(text):
        if number:
            tokens.append(number)
        elif other in PRECEDENCE or other in PARENS:
            tokens.append(other)
        elif not other.isspace():
            raise ValueError(f"unexpected character {other!r}")
    return tokens


def to_postfix(tokens: list[str]) -> list[str]:
    """Reorder infix tokens into postfix (reverse Polish) order."""
    output: list[str] = []
    stack: list[str] = []
    for token in tokens:
        if token.isdigit():
            output.append(token)
        elif token == "(":
            stack.append(token)
        elif token == ")":
            while stack and stack[-1] != "(":
                output.append(stack.pop())
            if not stack:
                raise ValueError("unbalanced parenthesis")
            stack.pop()
        else:
            while stack and stack[-1] != "(" and PRECEDENCE[stack[-1]] >= PRECEDENCE[token]:
                output.append(stack.pop())
            stack.append(token)
    while stack:
        token = stack.pop()
        if token == "(":
            raise ValueError("unbalanced parenthesis")
        output.append(token)
    return output


def apply_operator(operator: str, left: int, right: int) -> int:
    """Apply one binary operator; division truncates toward zero."""
    if operator == "+":
        return left + right
    if operator == "-":
        return left - right
    if operator == "*":
        return left * right
    if right == 0:
        raise ZeroDivisionError("division by zero")
    quotient = abs(left) // abs(right)
    return quotient if (left < 0) == (right < 0) else -quotient


def evaluate_postfix(tokens: list[str]) -> int:
    """Evaluate postfix tokens and return the single result."""
    stack: list[int] = []
    for token in tokens:
        if token.isdigit():
            stack.append(int(token))
            continue
        if len(stack) < 2:
            raise ValueError("missing operand")
        right = stack.pop()
        left = stack.pop()
        stack.append(apply_operator(token, left, right))
    if len(stack) != 1:
        raise ValueError("malformed expression")
    return stack[0]


def calculate(text: str) -> int:
    """Evaluate an infix expression string."""
    return evaluate_postfix(to_postfix(tokenize(text)))


def safe_calculate(text: str) -> int | None:
    """Evaluate an expression, returning None when it is malformed or divides by zero."""
    try:
        return calculate(text)
    except (ValueError, ZeroDivisionError):
        return None
