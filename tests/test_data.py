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


# ---------------------------------------------------------------------------------------------
# Token sequences: modular addition (Power et al. 2022) and a character-level corpus

def test_modadd_covers_every_pair_once_with_the_right_answers():
    p = 7
    ds = data.modadd(p, 0.4, seed=1)
    assert (ds.task, ds.name, ds.n_classes, ds.vocab_size) == ("sequence", "modadd", p + 2, p + 2)
    assert ds.vocab[:p] == tuple(map(str, range(p))) and ds.vocab[p:] == ("+", "=")
    assert ds.x_train.shape == (20, 4) and ds.x_test.shape == (29, 4)  # round(0.4 · 49) = 20
    assert ds.y_train.shape == (20,) and ds.x_train.dtype == ds.y_train.dtype == np.int32
    x = np.concatenate([ds.x_train, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_test])
    assert sorted(map(tuple, x[:, [0, 2]].tolist())) == [(a, b) for a in range(p) for b in range(p)]
    assert np.all(x[:, 1] == p) and np.all(x[:, 3] == p + 1)
    np.testing.assert_array_equal(y, (x[:, 0] + x[:, 2]) % p)
    assert data.decode(ds.x_train[0], ds.vocab).endswith("=")


def test_modadd_and_text_are_deterministic_per_seed(tmp_path):
    a, b, c = data.modadd(11, seed=0), data.modadd(11, seed=0), data.modadd(11, seed=1)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    f = tmp_path / "corpus.txt"
    f.write_text("the quick brown fox jumps over the lazy dog. " * 8, encoding="utf-8")
    t0, t1 = data.text(f, seq_len=8, seed=0), data.text(f, seq_len=8, seed=0)
    np.testing.assert_array_equal(t0.x_test, t1.x_test)
    assert data.load("modadd").x_train.shape == (4704, 4)  # p = 97: round(0.5 · 9409) pairs


def test_text_windows_decode_back_to_the_file(tmp_path):
    corpus = "Gordon's curried f p a, Euler's D — ünïcode too.\n" * 5
    f = tmp_path / "corpus.txt"
    f.write_text(corpus, encoding="utf-8")
    T = 10
    ds = data.text(f, seq_len=T, seed=3)
    assert ds.vocab == tuple(sorted(set(corpus))) and ds.n_classes == len(ds.vocab)
    n = (len(corpus) - 1) // T
    assert len(ds.x_train) + len(ds.x_test) == n and ds.x_train.shape[1:] == ds.y_train.shape[1:] \
        == (T,)
    windows = sorted(data.decode(w, ds.vocab) for w in np.concatenate([ds.x_train, ds.x_test]))
    assert windows == sorted(corpus[k * T:(k + 1) * T] for k in range(n))  # each window, once
    for x, y in zip(ds.x_train, ds.y_train):  # the target is the next character
        start = corpus.index(data.decode(x, ds.vocab))
        assert data.decode(y, ds.vocab) == corpus[start + 1:start + T + 1]
    loaded = data.load(f"text:{f}")  # the default seq_len, 64
    assert loaded.task == "sequence" and loaded.x_train.shape[1:] == (64,)


def test_sequence_tokens_one_hot_feed_a_gru():
    import jax

    import fbackprop as fb

    ds = data.modadd(5)
    x = data.one_hot(ds.x_train[:3], ds.vocab_size)
    assert x.shape == (3, 4, 7) and x.dtype == np.float32
    net = fb.gru(ds.vocab_size, 4, ds.n_classes)
    assert net.apply(net.init(jax.random.PRNGKey(0)), x).shape == (3, ds.n_classes)


@pytest.mark.parametrize("call, error, message", [
    (lambda tmp: data.text(tmp / "missing.txt"), FileNotFoundError, r"does not exist.*text:PATH"),
    (lambda tmp: data.text(tmp), FileNotFoundError, r"is not a file"),
    (lambda tmp: data.text(_write(tmp, "")), ValueError, r"is empty; expected at least 129"),
    (lambda tmp: data.text(_write(tmp, "abcdefg"), seq_len=4), ValueError,
     r"has 7 characters.*at least 9"),
    (lambda tmp: data.text(_write(tmp, "aaaaaaaaaa"), seq_len=2), ValueError, r"single character"),
    (lambda tmp: data.text(_write(tmp, "abcdefghij"), seq_len=0), ValueError, r"seq_len must be"),
    (lambda tmp: data.modadd(1), ValueError, r"p must be an int ≥ 2, received 1"),
    (lambda tmp: data.modadd(5, 0.0), ValueError, r"strictly between 0 and 1, received 0.0"),
    (lambda tmp: data.modadd(5, 1.5), ValueError, r"strictly between 0 and 1, received 1.5"),
    (lambda tmp: data.modadd(2, 0.1), ValueError, r"leaves 0 for training"),
], ids=["missing", "directory", "empty", "short", "one-char", "seq_len", "p", "fraction0",
        "fraction>1", "no-train"])
def test_sequence_data_bad_inputs(tmp_path, call, error, message):
    with pytest.raises(error, match=message):
        call(tmp_path)


def _write(folder, content):
    f = folder / "corpus.txt"
    f.write_text(content, encoding="utf-8")
    return f


def test_bad_sequence_datasets():
    ds = data.modadd(5)
    with pytest.raises(ValueError, match=r"token ids in \[0, 6\].*\[0, 6\)"):
        data.load(ds._replace(vocab=ds.vocab[:-1], n_classes=6))
    with pytest.raises(ValueError, match="n_classes = vocab_size = 7"):
        data.load(ds._replace(n_classes=5))
    with pytest.raises(TypeError, match="integer token ids"):
        data.load(ds._replace(x_train=ds.x_train.astype(float)))
    with pytest.raises(ValueError, match=r"\(n,\).*or \(n, T\)"):
        data.load(ds._replace(y_test=ds.y_test[:, None]))
    with pytest.raises(ValueError, match="vocab: a tuple of at least two strings"):
        data.load(ds._replace(vocab=None))
