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
import random

import numpy as np

from ..inputs import require_fraction, require_int, require_number, require_positive_int
from .base import TASKS, Dataset, check_labels, decode, one_hot, split, validated
from .sequences import modadd, text

__all__ = ["Dataset", "TASKS", "DATASETS", "SEQUENCE_DATASETS", "load", "check_labels", "digits",
           "mnist1d", "xor", "sine", "logistic2d", "modadd", "text", "one_hot", "decode"]


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
    test_fraction = require_fraction(test_fraction, "test_fraction", who="digits",
                                     fix="E.g. 0.2 (the default).")
    seed = _seed(seed, "digits")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)  # (n, 8, 8), features scaled to [0, 1]
    y = bunch.target.astype(np.int32)
    x_tr, y_tr, x_te, y_te = split(x, y, test_fraction, seed)
    return validated(Dataset(x_tr, y_tr, x_te, y_te, "classification", 10,
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
    return validated(Dataset(np.asarray(d["x"], np.float32), np.asarray(d["y"]),
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
    n_train, n_test = _sizes(n_train, n_test, "xor")
    noise = require_number(noise, "noise", minimum=0, who="xor",
                           fix="It is a standard deviation: e.g. 0.1 (the default), 0 for none.")
    rng = np.random.default_rng(_seed(seed, "xor"))

    def draw(n):
        corners = rng.choice([-1.0, 1.0], size=(n, 2))
        x = corners + noise * rng.standard_normal((n, 2))
        return x.astype(np.float32), (corners[:, 0] * corners[:, 1] < 0).astype(np.int32)

    (x_tr, y_tr), (x_te, y_te) = draw(n_train), draw(n_test)
    return validated(Dataset(x_tr, y_tr, x_te, y_te, "binary", 2,
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
    n_train, n_test = _sizes(n_train, n_test, "sine")
    rng = np.random.default_rng(_seed(seed, "sine"))
    x_tr = rng.uniform(-np.pi, np.pi, (n_train, 1)).astype(np.float32)
    x_te = np.linspace(-np.pi, np.pi, n_test, dtype=np.float32)[:, None]
    return validated(Dataset(x_tr, np.sin(x_tr), x_te, np.sin(x_te), "regression", None,
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
    n_train, n_test = _sizes(n_train, n_test, "logistic2d")
    separation = require_number(separation, "separation", who="logistic2d",
                                fix="E.g. 2.0 (the default).")
    rng = np.random.default_rng(_seed(seed, "logistic2d"))
    mean = np.array([1.0, 1.0]) * separation / 2

    def draw(n):
        y = rng.integers(0, 2, n).astype(np.int32)
        x = np.where(y[:, None] == 1, mean, -mean) + rng.standard_normal((n, 2))
        return x.astype(np.float32), y

    (x_tr, y_tr), (x_te, y_te) = draw(n_train), draw(n_test)
    return validated(Dataset(x_tr, y_tr, x_te, y_te, "binary", 2,
                              "logistic2d: two overlapping Gaussian classes in the plane",
                              "logistic2d"))


def _sizes(n_train, n_test, who: str) -> tuple:
    return (require_positive_int(n_train, "n_train", who=who),
            require_positive_int(n_test, "n_test", who=who))


def _seed(seed, who: str) -> int:
    return require_int(seed, "seed", minimum=0, who=who, fix="E.g. seed=0.")


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
        return validated(data)
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
