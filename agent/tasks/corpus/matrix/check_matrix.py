import pytest
from matrix import add, determinant, identity, multiply, scale, shape, trace, transpose


def test_shape_of_empty_and_rectangular():
    assert shape([]) == (0, 0)
    assert shape([[1, 2, 3], [4, 5, 6]]) == (2, 3)


def test_shape_rejects_ragged_rows():
    with pytest.raises(ValueError):
        shape([[1, 2], [3]])


def test_identity():
    assert identity(2) == [[1.0, 0.0], [0.0, 1.0]]
    assert identity(0) == []


def test_transpose_rectangular():
    assert transpose([[1, 2, 3], [4, 5, 6]]) == [[1, 4], [2, 5], [3, 6]]


def test_multiply():
    assert multiply([[1, 2], [3, 4]], [[5, 6], [7, 8]]) == [[19, 22], [43, 50]]


def test_multiply_by_identity():
    matrix = [[2, 0, 1], [1, 3, 2]]
    assert multiply(matrix, identity(3)) == matrix


def test_multiply_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        multiply([[1, 2]], [[1, 2]])


def test_determinant_small():
    assert determinant([[4]]) == 4
    assert determinant([[1, 2], [3, 4]]) == -2
    assert determinant([]) == 1.0


def test_determinant_three_by_three():
    assert determinant([[2, 0, 1], [1, 3, 2], [1, 1, 1]]) == 0
    assert determinant([[6, 1, 1], [4, -2, 5], [2, 8, 7]]) == -306


def test_determinant_requires_square():
    with pytest.raises(ValueError):
        determinant([[1, 2, 3], [4, 5, 6]])


def test_trace():
    assert trace([[1, 2], [3, 4]]) == 5
    with pytest.raises(ValueError):
        trace([[1, 2]])


def test_scale_and_add():
    assert scale([[1, 2]], 3) == [[3, 6]]
    assert add([[1, 2]], [[10, 20]]) == [[11, 22]]
    with pytest.raises(ValueError):
        add([[1]], [[1, 2]])
