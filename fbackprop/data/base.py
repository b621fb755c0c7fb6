"""The :class:`Dataset` type and its checks, shared by every loader."""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from ..inputs import require_finite, require_positive_int

__all__ = ["TASKS", "Dataset", "check_labels", "validated", "one_hot", "decode", "split"]


TASKS = ("classification", "binary", "regression", "sequence")


class Dataset(NamedTuple):
    """A train/test split with the task that decides the cost and the accuracy.

    A user's ``Dataset`` is checked by :func:`load` (task, shapes, labels in range).

    Attributes:
      x_train: float32 array (n_train, *example_shape); for ``"sequence"`` int32 token ids
        (n_train, T).
      y_train: int labels (n_train,) for ``"classification"`` and ``"binary"``; float32
        (n_train, 1) for ``"regression"``; for ``"sequence"`` int32 token ids, (n,) (one answer
        per sequence) or (n, T) (the next token at every position).
      x_test: as ``x_train``, with n_test rows.
      y_test: as ``y_train``, with n_test rows.
      task: ``"classification"`` (softmax cross-entropy on n_classes outputs), ``"binary"``
        (Fleuret's logistic loss on one output, labels 0/1 mapped to −1/+1), ``"regression"``
        (mean squared error) or ``"sequence"`` (tokens in, token targets out: softmax
        cross-entropy over the vocabulary).
      n_classes: number of classes (``None`` for regression; the vocabulary size for
        ``"sequence"``).
      description: one line saying what the data is.
      name: the loader's name (``"custom"`` by default).
      vocab: ``"sequence"`` only: a tuple of strings, ``vocab[i]`` the text of token i.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str
    n_classes: Optional[int]
    description: str
    name: str = "custom"
    vocab: Optional[tuple] = None

    @property
    def vocab_size(self) -> Optional[int]:
        """The number of tokens (``"sequence"`` tasks), else ``None``."""
        return None if self.vocab is None else len(self.vocab)


def check_labels(y, n_classes: int, *, split: str = "y_train") -> np.ndarray:
    """Check that ``y`` holds one class label in ``[0, n_classes)`` per example.

    Float labels with integral values are accepted and converted.

    Args:
      y: labels, array-like of shape (n,), integer, bool or integral float dtype.
      n_classes: the number of classes.
      split: the name used for ``y`` in error messages.

    Returns:
      The labels as an int32 array of shape (n,).

    Raises:
      ValueError: if ``y`` is not one-dimensional (one-hot rows, say), or a label lies outside
        ``[0, n_classes)``; the message names the first bad one.
      TypeError: if the labels are not integers (nor floats with integral values).
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{split} must hold one integer class label per example, shape (n,); "
                         f"received shape {y.shape}. Pass labels, not one-hot rows "
                         f"(y.argmax(axis=1)).")
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise TypeError(f"{split} must hold integer class labels, received dtype {y.dtype}. "
                            f"Convert them with y.astype(int).")
    bad = np.flatnonzero((y < 0) | (y >= n_classes))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{split} has label {int(y[i])} at index {i} ({bad.size} out of range in "
                         f"all); labels must lie in [0, {n_classes}) for {n_classes} classes. "
                         f"Fix the labels or the number of classes.")
    return y.astype(np.int32)


def validated(ds: Dataset) -> Dataset:
    """Check a Dataset's task, shapes and labels; return it with labels as int32."""
    if ds.task not in TASKS:
        raise ValueError(f"Dataset.task must be one of {', '.join(map(repr, TASKS))}, "
                         f"received {ds.task!r}.")
    for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        if np.ndim(x) < 2 or len(x) != len(y) or len(x) == 0:
            raise ValueError(f"x_{split} must be an array (n, ...) with n ≥ 1 matching y_{split}; "
                             f"received x_{split} of shape {np.shape(x)} and y_{split} of shape "
                             f"{np.shape(y)}.")
    if np.shape(ds.x_train)[1:] != np.shape(ds.x_test)[1:]:
        raise ValueError(f"x_train and x_test must hold examples of one shape (the network's "
                         f"input), received x_train of shape {np.shape(ds.x_train)} and x_test "
                         f"of shape {np.shape(ds.x_test)}. Fix: give both splits the same "
                         f"features.")
    if ds.task == "sequence":
        return _validated_sequence(ds)
    for split, x in (("train", ds.x_train), ("test", ds.x_test)):
        require_finite(np.asarray(x, np.float64), f"x_{split}",
                       fix=f"Dataset.x_{split} holds NaN or inf; remove or replace those examples "
                           f"before training.")
    if ds.task == "regression":
        for split, y in (("train", ds.y_train), ("test", ds.y_test)):
            require_finite(np.asarray(y, np.float64), f"y_{split}",
                           fix=f"Dataset.y_{split} holds NaN or inf; remove or replace those "
                               f"targets before training.")
        y_train = np.asarray(ds.y_train, np.float32).reshape(len(ds.y_train), -1)
        y_test = np.asarray(ds.y_test, np.float32).reshape(len(ds.y_test), -1)
        if y_train.shape[1:] != y_test.shape[1:]:
            raise ValueError(f"a 'regression' Dataset needs targets of one width in both splits "
                             f"(the network's output width), received y_train of shape "
                             f"{np.shape(ds.y_train)} and y_test of shape {np.shape(ds.y_test)}. "
                             f"Fix: give every target the same number of values.")
        return ds._replace(y_train=y_train, y_test=y_test)
    n = ds.n_classes
    if not isinstance(n, int) or n < 2 or (ds.task == "binary" and n != 2):
        raise ValueError(f"Dataset.n_classes must be an int ≥ 2 (exactly 2 for task 'binary'), "
                         f"received {n!r}.")
    return ds._replace(y_train=check_labels(ds.y_train, n, split="y_train"),
                       y_test=check_labels(ds.y_test, n, split="y_test"))


def _validated_sequence(ds: Dataset) -> Dataset:
    """A ``"sequence"`` Dataset: int tokens x (n, T), y (n,) or (n, T), all in [0, len(vocab))."""
    vocab = ds.vocab
    if not isinstance(vocab, (tuple, list)) or len(vocab) < 2 or \
            not all(isinstance(t, str) for t in vocab):
        raise ValueError(f"a 'sequence' Dataset needs vocab: a tuple of at least two strings (the "
                         f"text of each token id), received {vocab!r}.")
    vocab = tuple(vocab)
    if ds.n_classes != len(vocab):
        raise ValueError(f"a 'sequence' Dataset has n_classes = vocab_size = {len(vocab)} (the "
                         f"output width of a token-predicting model), received n_classes = "
                         f"{ds.n_classes!r}. Pass n_classes=len(vocab).")
    arrays = {}
    for split in ("train", "test"):
        x, y = np.asarray(getattr(ds, f"x_{split}")), np.asarray(getattr(ds, f"y_{split}"))
        if x.ndim != 2 or x.shape[1] == 0:
            raise ValueError(f"x_{split} of a 'sequence' Dataset must hold token ids of shape "
                             f"(n, T) with T ≥ 1, received shape {x.shape}.")
        if y.shape not in ((len(x),), x.shape):
            raise ValueError(f"y_{split} must be (n,) (one answer token per sequence) or (n, T) "
                             f"(a target at every position) for x_{split} of shape {x.shape}, "
                             f"received shape {y.shape}.")
        for what, t in ((f"x_{split}", x), (f"y_{split}", y)):
            if not np.issubdtype(t.dtype, np.integer):
                raise TypeError(f"{what} must hold integer token ids, received dtype {t.dtype}. "
                                f"Encode text with the vocabulary first.")
            if t.min() < 0 or t.max() >= len(vocab):
                raise ValueError(f"{what} has token ids in [{t.min()}, {t.max()}]; they must lie "
                                 f"in [0, {len(vocab)}) for a vocabulary of {len(vocab)} tokens.")
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x.astype(np.int32), y.astype(np.int32)
    return ds._replace(vocab=vocab, **arrays)


def one_hot(tokens, vocab_size: int) -> np.ndarray:
    """Token ids (n, T) → float32 one-hot vectors (n, T, vocab_size), the input of a recurrent
    network (``fb.gru(vocab_size, H, vocab_size)``).

    Args:
      tokens: integer token ids, any shape, each in [0, vocab_size).
      vocab_size: the number of tokens.

    Returns:
      float32 array of shape ``tokens.shape + (vocab_size,)``.
    """
    vocab_size = require_positive_int(vocab_size, "vocab_size", who="one_hot")
    tokens = _token_ids(tokens, vocab_size, "one_hot")
    return np.eye(vocab_size, dtype=np.float32)[tokens]


def decode(tokens, vocab) -> str:
    """The text of a sequence of token ids: ``"".join(vocab[i] for i in tokens)``.

    Args:
      tokens: integer token ids, any shape (read in order), each in [0, len(vocab)).
      vocab: a sequence of strings, ``vocab[i]`` the text of token i.

    Returns:
      The text.
    """
    if isinstance(vocab, (str, bytes)) or not hasattr(vocab, "__len__"):
        raise TypeError(f"decode: vocab must be a sequence of strings (vocab[i] the text of token "
                        f"i), received {type(vocab).__name__}. Pass Dataset.vocab.")
    return "".join(vocab[int(i)] for i in np.ravel(_token_ids(tokens, len(vocab), "decode")))


def _token_ids(tokens, vocab_size: int, who: str) -> np.ndarray:
    """``tokens`` as an integer array with every id in [0, vocab_size) (NumPy would read a
    negative id from the end, silently)."""
    tokens = np.asarray(tokens)
    if tokens.size and not np.issubdtype(tokens.dtype, np.integer):
        raise TypeError(f"{who}: tokens must be integer token ids, received dtype {tokens.dtype}. "
                        f"Fix: tokens.astype(np.int32).")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"{who}: tokens must lie in [0, {vocab_size}), received ids in "
                         f"[{tokens.min()}, {tokens.max()}]. Fix: map tokens into the vocabulary "
                         f"of {vocab_size} tokens.")
    return tokens.astype(np.int64) if tokens.size == 0 else tokens


def split(x, y, test_fraction: float, seed: int):
    """A fixed, seeded random train/test split (the first `test_fraction` of a permutation)."""
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]
