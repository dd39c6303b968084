"""The assignment's own checks of its helpers, ported, plus the errors cnnlab adds."""

import numpy as np
import pytest
import torch

from cnnlab.assignment import normalize_images, normalize_tensor, one_hot


def test_normalize_images_as_the_assignment_tests_it() -> None:
    test_numbers = np.array([0, 127, 255])
    out = normalize_images(test_numbers)
    assert type(out).__module__ == np.__name__, "Not Numpy Object"
    assert out.shape == test_numbers.shape
    np.testing.assert_almost_equal(test_numbers / 255, out)
    assert out.dtype == np.float32


def test_one_hot_as_the_assignment_tests_it() -> None:
    test_numbers = np.arange(10)
    out = one_hot(test_numbers, 10)
    expected = np.identity(10)
    assert type(out).__module__ == np.__name__, "Not Numpy Object"
    assert out.shape == expected.shape
    np.testing.assert_almost_equal(expected, out)


def test_one_hot_places_each_label() -> None:
    out = one_hot(np.array([3, 0, 3]), 5)
    assert out.tolist() == [[0, 0, 0, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 1, 0]]


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.array([0, -1]), "out-of-range"),
        (np.array([0, 10]), "out-of-range"),
        (np.array([0.5, 1.0]), "must be integers"),
        (np.array(["a", "b"]), "must be integers"),
    ],
)
def test_one_hot_rejects_bad_labels(labels: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        one_hot(labels, 10)


def test_one_hot_accepts_whole_floats() -> None:
    assert one_hot(np.array([1.0, 2.0]), 3).tolist() == [[0, 1, 0], [0, 0, 1]]


def test_tensor_normalisation_is_bit_identical_to_the_numpy_one() -> None:
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    from_numpy = normalize_images(pixels)
    from_tensor = normalize_tensor(torch.from_numpy(pixels)).numpy()
    assert from_tensor.dtype == np.float32
    assert np.array_equal(from_numpy, from_tensor)
