"""Token-sequence data sets (task ``"sequence"``), generated locally: modular addition, the
"grokking" task of Power et al. (2022), and a character-level corpus from a file the user names."""
from __future__ import annotations

import pathlib

import numpy as np

from ..inputs import require_fraction, require_int
from .base import Dataset, validated

__all__ = ["modadd", "text"]


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
    p = require_int(p, "p", minimum=2, who="modadd")
    train_fraction = require_fraction(train_fraction, "train_fraction", who="modadd")
    n_train = int(round(train_fraction * p * p))
    if not 0 < n_train < p * p:
        raise ValueError(f"modadd: train_fraction = {train_fraction} of the {p * p} pairs leaves "
                         f"{n_train} for training and {p * p - n_train} for testing; both need at "
                         f"least one. Use a fraction nearer 0.5 or a larger p.")
    a, b = (t.ravel() for t in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
    x = np.stack([a, np.full_like(a, p), b, np.full_like(a, p + 1)], axis=1).astype(np.int32)
    y = ((a + b) % p).astype(np.int32)
    order = np.random.default_rng(
        require_int(seed, "seed", minimum=0, who="modadd")).permutation(p * p)
    train, test = order[:n_train], order[n_train:]
    vocab = tuple(str(i) for i in range(p)) + ("+", "=")
    return validated(Dataset(x[train], y[train], x[test], y[test], "sequence", p + 2,
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
    seq_len = require_int(seq_len, "seq_len", minimum=1, who="text")
    test_fraction = require_fraction(test_fraction, "test_fraction", who="text")
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
    order = np.random.default_rng(
        require_int(seed, "seed", minimum=0, who="text")).permutation(n_windows)
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return validated(Dataset(x[train], y[train], x[test], y[test], "sequence", len(vocab),
                              f"text: {file.name}, {len(corpus)} characters, {len(vocab)} distinct, "
                              f"windows of {seq_len}", f"text:{file.resolve()}", vocab))
