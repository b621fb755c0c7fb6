"""Data sets for training, all available offline.

Each loader returns a :class:`Dataset`: NumPy arrays ``x_train, y_train, x_test, y_test`` (x in
float32 with each example in its natural shape — an 8×8 image, a signal of 40 samples, a point
in the plane), the ``task`` that decides the cost and the accuracy, ``n_classes`` and a one-line
``description``. Class labels are integers in ``[0, n_classes)``; the trainer turns them into
one-hot targets (``"classification"``, softmax cross-entropy) or into Fleuret's ±1
(``"binary"``, logistic loss). Regression targets are float arrays of shape (n, 1).

Sequence tasks (``"sequence"``: :func:`modadd`, :func:`text`) hold int32 token ids instead:
x (n, T) in ``[0, vocab_size)``, and y either (n,) — one answer token per sequence (modadd) — or
(n, T) — the next token at every position (text). ``vocab`` names every token (``vocab[i]`` is
the string of id i) and ``n_classes == vocab_size == len(vocab)``, the output width of a model
that predicts tokens. A transformer reads x as it is; a recurrent network reads
``one_hot(x, vocab_size)``, float32 (n, T, vocab_size).

Every split is fixed: a data set does not depend on the training seed, so test accuracies of
different runs are comparable. Synthetic sets are drawn with a NumPy generator seeded by the
loader's own ``seed`` argument; nothing touches a global random state for long (MNIST-1D's
generator seeds NumPy's global state, which is saved and restored around it).
"""
from __future__ import annotations

import functools
import pathlib
import random
from typing import NamedTuple, Optional

import numpy as np

from .inputs import require_finite

__all__ = ["Dataset", "TASKS", "DATASETS", "SEQUENCE_DATASETS", "load", "check_labels", "digits",
           "mnist1d", "xor", "sine", "logistic2d", "modadd", "text", "one_hot", "decode"]

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


def _validated(ds: Dataset) -> Dataset:
    """Check a Dataset's task, shapes and labels; return it with labels as int32."""
    if ds.task not in TASKS:
        raise ValueError(f"Dataset.task must be one of {', '.join(map(repr, TASKS))}, "
                         f"received {ds.task!r}.")
    for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        if np.ndim(x) < 2 or len(x) != len(y) or len(x) == 0:
            raise ValueError(f"x_{split} must be an array (n, ...) with n ≥ 1 matching y_{split}; "
                             f"received x_{split} of shape {np.shape(x)} and y_{split} of shape "
                             f"{np.shape(y)}.")
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
        return ds._replace(y_train=np.asarray(ds.y_train, np.float32).reshape(len(ds.y_train), -1),
                           y_test=np.asarray(ds.y_test, np.float32).reshape(len(ds.y_test), -1))
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
    network (``fb.gru(vocab_size, H, vocab_size)``)."""
    tokens = np.asarray(tokens)
    return np.eye(vocab_size, dtype=np.float32)[tokens]


def decode(tokens, vocab) -> str:
    """The text of a sequence of token ids: ``"".join(vocab[i] for i in tokens)``."""
    return "".join(vocab[int(i)] for i in np.ravel(tokens))


def _require_fraction(value, argument: str, who: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or \
            not 0.0 < float(value) < 1.0:
        raise ValueError(f"{who}: {argument} must be a number strictly between 0 and 1, received "
                         f"{value!r}. Use e.g. 0.5.")
    return float(value)


def _require_int(value, argument: str, minimum: int, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{who}: {argument} must be an int ≥ {minimum}, received {value!r}.")
    return int(value)


def _split(x, y, test_fraction: float, seed: int):
    """A fixed, seeded random train/test split (the first `test_fraction` of a permutation)."""
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def digits(*, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8×8 handwritten digits (1797 images, 10 classes).

    Pixel values are scaled from 0…16 to 0…1; a fixed, seeded split holds out 20% for testing
    (1438 train, 359 test).

    Args:
      test_fraction: the fraction of the examples held out for testing.
      seed: seeds the permutation that makes the split.

    Returns:
      A ``"classification"`` :class:`Dataset`: x float32 (n, 8, 8), y int32 (n,) in [0, 10).
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)  # (n, 8, 8), features scaled to [0, 1]
    y = bunch.target.astype(np.int32)
    x_tr, y_tr, x_te, y_te = _split(x, y, test_fraction, seed)
    return _validated(Dataset(x_tr, y_tr, x_te, y_te, "classification", 10,
                              "scikit-learn digits: 8×8 images scaled to [0, 1], 10 classes",
                              "digits"))


def mnist1d() -> Dataset:
    """MNIST-1D (Greydanus 2020), generated locally with ``mnist1d.data.make_dataset``.

    Its default arguments: 5000 signals of length 40, 10 classes, the paper's 4000/1000 split.
    Never downloads; generation takes about a second. NumPy's and Python's global random states
    are saved and restored around the generator.

    Returns:
      A ``"classification"`` :class:`Dataset`: x float32 (n, 40), y int32 (n,) in [0, 10).
    """
    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset seeds NumPy's and Python's global generators; leave them as we found them.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return _validated(Dataset(np.asarray(d["x"], np.float32), np.asarray(d["y"]),
                              np.asarray(d["x_test"], np.float32), np.asarray(d["y_test"]),
                              "classification", 10,
                              "MNIST-1D (Greydanus 2020): signals of length 40, 10 classes, "
                              "4000 train / 1000 test", "mnist1d"))


def xor(*, n_train: int = 400, n_test: int = 200, noise: float = 0.1, seed: int = 0) -> Dataset:
    """Noisy XOR in the plane: points around the four corners (±1, ±1).

    Class 1 where exactly one coordinate is positive. Not linearly separable; needs a hidden
    layer.

    Args:
      n_train: number of training points.
      n_test: number of test points.
      noise: standard deviation of the Gaussian noise added to each corner.
      seed: seeds the NumPy generator that draws both splits.

    Returns:
      A ``"binary"`` :class:`Dataset`: x float32 (n, 2), y int32 (n,) in {0, 1}.
    """
    rng = np.random.default_rng(seed)

    def draw(n):
        corners = rng.choice([-1.0, 1.0], size=(n, 2))
        x = corners + noise * rng.standard_normal((n, 2))
        return x.astype(np.float32), (corners[:, 0] * corners[:, 1] < 0).astype(np.int32)

    (x_tr, y_tr), (x_te, y_te) = draw(n_train), draw(n_test)
    return _validated(Dataset(x_tr, y_tr, x_te, y_te, "binary", 2,
                              "XOR: noisy points near (±1, ±1), class 1 where the signs differ",
                              "xor"))


def sine(*, n_train: int = 256, n_test: int = 200, seed: int = 0) -> Dataset:
    """1-D regression of y = sin(x) on [−π, π].

    Fleuret, universal approximation: a continuous function on an interval is approximated by a
    sum of translated and scaled ReLUs. Training x uniform at random, test x on an even grid; no
    noise.

    Args:
      n_train: number of training points.
      n_test: number of test points.
      seed: seeds the NumPy generator that draws the training x.

    Returns:
      A ``"regression"`` :class:`Dataset`: x float32 (n, 1), y float32 (n, 1).
    """
    rng = np.random.default_rng(seed)
    x_tr = rng.uniform(-np.pi, np.pi, (n_train, 1)).astype(np.float32)
    x_te = np.linspace(-np.pi, np.pi, n_test, dtype=np.float32)[:, None]
    return _validated(Dataset(x_tr, np.sin(x_tr), x_te, np.sin(x_te), "regression", None,
                              "sine: y = sin(x) on [−π, π]", "sine"))


def logistic2d(*, n_train: int = 100, n_test: int = 400, separation: float = 2.0,
               seed: int = 0) -> Dataset:
    """Two Gaussian classes in the plane, for Fleuret's logistic regression.

    Unit variance and means ±(separation/2)(1, 1); 100 training points as in his figures.

    Args:
      n_train: number of training points.
      n_test: number of test points.
      separation: scales the means ±(separation/2)(1, 1); larger separates the classes more.
      seed: seeds the NumPy generator that draws both splits.

    Returns:
      A ``"binary"`` :class:`Dataset`: x float32 (n, 2), y int32 (n,) in {0, 1} (class 1 around
      +(separation/2)(1, 1)).
    """
    rng = np.random.default_rng(seed)
    mean = np.array([1.0, 1.0]) * separation / 2

    def draw(n):
        y = rng.integers(0, 2, n).astype(np.int32)
        x = np.where(y[:, None] == 1, mean, -mean) + rng.standard_normal((n, 2))
        return x.astype(np.float32), y

    (x_tr, y_tr), (x_te, y_te) = draw(n_train), draw(n_test)
    return _validated(Dataset(x_tr, y_tr, x_te, y_te, "binary", 2,
                              "logistic2d: two overlapping Gaussian classes in the plane",
                              "logistic2d"))


def modadd(p: int = 97, train_fraction: float = 0.5, seed: int = 0) -> Dataset:
    """Modular addition, the "grokking" task of Power et al. (2022): every pair (a, b) with
    0 ≤ a, b < p, written as the four tokens ``[a, "+", b, "="]``, with the answer (a + b) mod p.

    Args:
      p: the modulus, an int ≥ 2 (the paper's 97).
      train_fraction: the share of the p² equations used for training, in (0, 1); the rest is
        the test set. Each pair appears exactly once, in one split.
      seed: seeds the random assignment of pairs to the splits.

    Returns:
      A ``"sequence"`` :class:`Dataset`: x (n, 4) int32 token ids, y (n,) int32 answers; token i
      < p is the number i, token p is "+", token p + 1 is "="; ``vocab`` = ("0", …, "p−1", "+",
      "="), ``n_classes == vocab_size == p + 2``.
    """
    p = _require_int(p, "p", 2, "modadd")
    train_fraction = _require_fraction(train_fraction, "train_fraction", "modadd")
    n_train = int(round(train_fraction * p * p))
    if not 0 < n_train < p * p:
        raise ValueError(f"modadd: train_fraction = {train_fraction} of the {p * p} pairs leaves "
                         f"{n_train} for training and {p * p - n_train} for testing; both need at "
                         f"least one. Use a fraction nearer 0.5 or a larger p.")
    a, b = (t.ravel() for t in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
    x = np.stack([a, np.full_like(a, p), b, np.full_like(a, p + 1)], axis=1).astype(np.int32)
    y = ((a + b) % p).astype(np.int32)
    order = np.random.default_rng(seed).permutation(p * p)
    train, test = order[:n_train], order[n_train:]
    vocab = tuple(str(i) for i in range(p)) + ("+", "=")
    return _validated(Dataset(x[train], y[train], x[test], y[test], "sequence", p + 2,
                              f"modadd: (a + b) mod {p} from tokens [a, +, b, =], "
                              f"{n_train} of {p * p} pairs for training", "modadd", vocab))


def text(path, seq_len: int = 64, seed: int = 0, *, test_fraction: float = 0.1) -> Dataset:
    """A character-level corpus from the file ``path`` (UTF-8): the vocabulary is the file's
    distinct characters, sorted; the examples are the non-overlapping windows of ``seq_len``
    characters, each with the next character at every position as its target.

    Args:
      path: a text file, at least 2·seq_len + 1 characters long.
      seq_len: T, the window length, an int ≥ 1.
      seed: seeds the random assignment of windows to the splits.
      test_fraction: the share of windows held out for testing, in (0, 1) (at least one window
        each way); each split keeps its windows in file order.

    Returns:
      A ``"sequence"`` :class:`Dataset`: x, y int32 (n, T), window k being
      ``x = ids[k·T : k·T + T]``, ``y = ids[k·T + 1 : k·T + T + 1]``; ``vocab`` the characters,
      ``n_classes == vocab_size``. :func:`decode` turns ids back into text.

    Raises:
      FileNotFoundError: no such file. ValueError: the file is empty, not UTF-8, or too short
      for two windows; a bad seq_len or test_fraction.
    """
    seq_len = _require_int(seq_len, "seq_len", 1, "text")
    test_fraction = _require_fraction(test_fraction, "test_fraction", "text")
    file = pathlib.Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"text: expected a readable text file, received path {str(path)!r}"
                                f", which {'is not a file' if file.exists() else 'does not exist'}."
                                f" Pass data='text:PATH' with the path of a UTF-8 text file.")
    try:
        corpus = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"text: expected a UTF-8 text file, {str(path)!r} is not ({err}). "
                         f"Convert it to UTF-8 first.") from None
    if not corpus:
        raise ValueError(f"text: the file {str(path)!r} is empty; expected at least "
                         f"{2 * seq_len + 1} characters (two windows of seq_len = {seq_len} and "
                         f"one next character).")
    vocab = tuple(sorted(set(corpus)))
    if len(vocab) < 2:
        raise ValueError(f"text: the file {str(path)!r} uses a single character ({vocab[0]!r}); "
                         f"a vocabulary needs at least two.")
    lookup = {c: i for i, c in enumerate(vocab)}
    ids = np.fromiter((lookup[c] for c in corpus), np.int32, len(corpus))
    n_windows = (len(corpus) - 1) // seq_len
    if n_windows < 2:
        raise ValueError(f"text: the file {str(path)!r} has {len(corpus)} characters; windows of "
                         f"seq_len = {seq_len} need at least {2 * seq_len + 1} (two windows and a "
                         f"next character). Use a longer file or a smaller seq_len.")
    starts = np.arange(n_windows) * seq_len
    x = ids[starts[:, None] + np.arange(seq_len)]
    y = ids[starts[:, None] + np.arange(1, seq_len + 1)]
    n_test = min(max(int(round(n_windows * test_fraction)), 1), n_windows - 1)
    order = np.random.default_rng(seed).permutation(n_windows)
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return _validated(Dataset(x[train], y[train], x[test], y[test], "sequence", len(vocab),
                              f"text: {file.name}, {len(corpus)} characters, {len(vocab)} distinct, "
                              f"windows of {seq_len}", f"text:{path}", vocab))


DATASETS = {"digits": digits, "mnist1d": mnist1d, "xor": xor, "sine": sine,
            "logistic2d": logistic2d}
# Token sequences (task "sequence"), loaded by name too; kept apart from DATASETS, the sets the
# trainer and `fbackprop train --data` accept today.
SEQUENCE_DATASETS = {"modadd": modadd}


def load(data) -> Dataset:
    """A data set by name, or a user's :class:`Dataset` after checking it.

    Args:
      data: ``"digits" | "mnist1d" | "xor" | "sine" | "logistic2d" | "modadd"`` (loaded with the
        loader's defaults, once per process), ``"text:PATH"`` (a character-level corpus from a
        file), or a :class:`Dataset`, whose task, shapes (x (n, ...) with n ≥ 1 matching y) and
        labels (in ``[0, n_classes)``) are checked.

    Returns:
      The :class:`Dataset`, labels as int32 (n,) for classification and binary tasks, targets as
      float32 (n, k) for regression, token ids as int32 for sequences.

    Raises:
      ValueError: for an unknown name, an unknown task, mismatched or empty splits, a bad
        ``n_classes`` or labels out of range.
      TypeError: if ``data`` is neither a name nor a :class:`Dataset`, or the labels are not
        integers.
    """
    if isinstance(data, Dataset):
        return _validated(data)
    if isinstance(data, str):
        if data in DATASETS:
            return _load_default(data)
        if data in SEQUENCE_DATASETS:
            return SEQUENCE_DATASETS[data]()
        if data.startswith("text:"):
            return text(data[len("text:"):])
        raise ValueError(f"unknown data {data!r}; valid names are "
                         f"{', '.join(map(repr, {**DATASETS, **SEQUENCE_DATASETS}))} or 'text:PATH' (or pass an "
                         f"fbackprop.data.Dataset).")
    raise TypeError(f"data must be a name such as 'digits' or an fbackprop.data.Dataset, "
                    f"received {type(data).__name__}.")


@functools.lru_cache(maxsize=None)
def _load_default(name: str) -> Dataset:
    """A named data set with its loader's defaults, generated once per process (its arrays are
    made read-only, so sharing them between runs is safe)."""
    ds = DATASETS[name]()
    for array in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        array.flags.writeable = False
    return ds
