"""Small dense matrix helpers on lists of lists."""

from __future__ import annotations

Matrix = list[list[float]]


def shape(matrix: Matrix) -> tuple[int, int]:
    """Return (rows, columns), checking that every row has the same length."""
    if not matrix:
        return (0, 0)
    width = len(matrix[0])
    for row in matrix:
        if len(row) != width:
            raise ValueError("ragged matrix")
    return (len(matrix), width)


def identity(size: int) -> Matrix:
    """Return the size-by-size identity matrix."""
    return [[1.0 if row == col else 0.0 for col in range(size)] for row in range(size)]


def transpose(matrix: Matrix) -> Matrix:
    """Swap rows and columns."""
    rows, cols = shape(matrix)
    return [[matrix[row][col] for row in range(rows)] for col in range(cols)]


def multiply(left: Matrix, right: Matrix) -> Matrix:
    """Return the matrix product of left and right."""
    rows, inner = shape(left)
    right_rows, cols = shape(right)
    if inner != right_rows:
        raise ValueError(f"cannot multiply {rows}x{inner} by {right_rows}x{cols}")
    return [
        [sum(left[r][k] * right[k][c] for k in range(inner)) for c in range(cols)]
        for r in range(rows)
    ]


def determinant(matrix: Matrix) -> float:
    """Return the determinant by cofactor expansion along the first row."""
    rows, cols = shape(matrix)
    if rows != cols:
        raise ValueError("determinant needs a square matrix")
    if rows == 0:
        return 1.0
    if rows == 1:
        return matrix[0][0]
    total = 0.0
    for col in range(cols):
        minor = [row[:col] + row[col + 1 :] for row in matrix[1:]]
        sign = -1.0 if col % 2 else 1.0
        total += sign * matrix[0][col] * determinant(minor)
    return total


def trace(matrix: Matrix) -> float:
    """Return the sum of the main diagonal of a square matrix."""
    rows, cols = shape(matrix)
    if rows != cols:
        raise ValueError("trace needs a square matrix")
    return sum(matrix[index][index] for index in range(rows))


def scale(matrix: Matrix, factor: float) -> Matrix:
    """Multiply every entry by factor."""
    return [[value * factor for value in row] for row in matrix]


def add(left: Matrix, right: Matrix) -> Matrix:
    """Return the entry-wise sum of two matrices of the same shape."""
    if shape(left) != shape(right):
        raise ValueError("shapes differ")
    return [[a + b for a, b in zip(row_a, row_b)] for row_a, row_b in zip(left, right)]
