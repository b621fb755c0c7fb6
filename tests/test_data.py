"""fbackprop.data: every loader's split, shapes, labels and determinism; label validation."""
import random

import numpy as np
import pytest

from fbackprop import data
from fbackprop.training import shape_inputs

# name → (train size, test size, example shape, task, classes)
EXPECTED = {
    "digits": (1438, 359, (8, 8), "classification", 10),
    "mnist1d": (4000, 1000, (40,), "classification", 10),
    "xor": (400, 200, (2,), "binary", 2),
    "sine": (256, 200, (1,), "regression", None),
    "logistic2d": (100, 400, (2,), "binary", 2),
}


@pytest.fixture(scope="module", params=list(EXPECTED))
def loaded(request):
    return request.param, data.load(request.param)


def test_split_shapes_and_labels(loaded):
    name, ds = loaded
    n_train, n_test, example, task, n_classes = EXPECTED[name]
    assert ds.x_train.shape == (n_train, *example) and ds.x_test.shape == (n_test, *example)
    assert ds.x_train.dtype == np.float32 and (ds.task, ds.n_classes, ds.name) == \
        (task, n_classes, name)
    assert len(ds.y_train) == n_train and len(ds.y_test) == n_test
    if n_classes:
        assert ds.y_train.dtype == np.int32
        # every class appears in both splits
        assert set(ds.y_train) == set(ds.y_test) == set(range(n_classes))
    else:
        np.testing.assert_allclose(ds.y_test, np.sin(ds.x_test), atol=1e-6)
    assert np.all(np.isfinite(ds.x_train)) and ds.description


def test_loaders_are_deterministic_and_leave_global_random_state_alone(loaded):
    # (MNIST-1D's generator seeds NumPy's and Python's global generators; ours restores them)
    name, ds = loaded
    np.random.seed(123)
    random.seed(123)
    expected = (np.random.random(), random.random())
    np.random.seed(123)
    random.seed(123)
    again = data.load(name)
    assert (np.random.random(), random.random()) == expected
    for a, b in zip(ds[:4], again[:4]):
        np.testing.assert_array_equal(a, b)


def test_digits_are_scaled_and_disjoint():
    ds = data.load("digits")
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    train_rows = {row.tobytes() for row in ds.x_train.reshape(len(ds.x_train), -1)}
    assert not any(row.tobytes() in train_rows for row in ds.x_test.reshape(len(ds.x_test), -1))


def test_model_shaping():
    x = np.zeros((5, 8, 8), np.float32)
    assert shape_inputs(x, (64,)).shape == (5, 64)            # mlp: flat features
    assert shape_inputs(x, (1, 8, 8)).shape == (5, 1, 8, 8)   # cnn: one channel
    assert shape_inputs(x, (None, 8)).shape == (5, 8, 8)      # rnn: 8 steps of 8 features
    assert shape_inputs(np.zeros((5, 40)), (None, 1)).shape == (5, 40, 1)
    with pytest.raises(ValueError, match=r"shape \(8, 8\) \(64 values\).*input shape \(10,\)"):
        shape_inputs(x, (10,))


LABELS = [
    (np.array([0, 1, 3]), 3, ValueError, r"label 3 at index 2 \(1 out of range.*\[0, 3\)"),
    (np.array([0, -1]), 3, ValueError, r"label -1 at index 1"),
    (np.array([0.5, 1.0]), 3, TypeError, r"integer class labels, received dtype float64"),
    (np.eye(3), 3, ValueError, r"shape \(n,\); received shape \(3, 3\).*argmax"),
]


@pytest.mark.parametrize("y, n, error, message", LABELS, ids=["high", "negative", "float",
                                                              "one-hot"])
def test_bad_labels(y, n, error, message):
    with pytest.raises(error, match=message):
        data.check_labels(y, n)


def test_whole_float_labels_are_accepted():
    assert data.check_labels(np.array([0.0, 2.0]), 3).tolist() == [0, 2]


def test_bad_names_and_datasets():
    with pytest.raises(ValueError, match=r"unknown data 'mnist'.*'mnist1d'"):
        data.load("mnist")
    with pytest.raises(TypeError, match="data must be a name"):
        data.load(42)
    ds = data.xor()
    with pytest.raises(ValueError, match="task must be one of"):
        data.load(ds._replace(task="ranking"))
    with pytest.raises(ValueError, match="exactly 2 for task 'binary'"):
        data.load(ds._replace(n_classes=3))
    with pytest.raises(ValueError, match=r"x_test .*matching y_test"):
        data.load(ds._replace(y_test=ds.y_test[:5]))
