"""A token-sequence run's vocabulary, saved beside its config (``vocab.json``): the text of each
token id and the window length, so that a trained model decodes and samples without its corpus,
and a resume notices a corpus that changed."""
from __future__ import annotations

import json
import pathlib

from .files import VOCAB, write_json

__all__ = ["write_vocab", "read_vocab", "check_vocab"]


def write_vocab(out, ds):
    """Save a token-sequence data set's vocabulary in ``out`` (``vocab.json``: ``vocab``, the
    text of each token id, ``seq_len``, the window length T, and ``data``, the data set's name),
    so that a trained model can decode and sample without its corpus. Nothing is written for
    other tasks.

    Args:
      out: the run directory.
      ds: the :class:`~fbackprop.data.Dataset` trained on.
    """
    if ds.vocab is None:
        return
    write_json(pathlib.Path(out) / VOCAB, {"vocab": list(ds.vocab),
                                             "seq_len": int(ds.x_train.shape[1]),
                                             "data": ds.name})


def read_vocab(out):
    """The vocabulary saved in the run directory ``out``.

    Args:
      out: the run directory.

    Returns:
      ``{"vocab": tuple of str, "seq_len": int, "data": str}``, or ``None`` when the run has
      no vocabulary (it did not train on token sequences).

    Raises:
      ValueError: ``vocab.json`` is not JSON or lacks its fields.
    """
    path = pathlib.Path(out).absolute() / VOCAB
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
        vocab, seq_len = saved["vocab"], saved["seq_len"]
        ok = (isinstance(vocab, list) and len(vocab) >= 2 and all(isinstance(t, str) for t in vocab)
              and isinstance(seq_len, int) and seq_len >= 1)
    except (json.JSONDecodeError, KeyError, TypeError):
        ok = False
    if not ok:
        raise ValueError(f"{path} is damaged: expected a JSON object with \"vocab\" (a list of at "
                         f"least two strings) and \"seq_len\" (an int ≥ 1). It is written at the "
                         f"start of a run; start the run again with --force.")
    return {"vocab": tuple(vocab), "seq_len": seq_len, "data": saved.get("data")}


def check_vocab(out, ds):
    """On resume: the data set must have the vocabulary and window length the run was trained
    with (a corpus edited since would change what every token id means).

    Args:
      out: the run directory.
      ds: the data set the resumed run loaded.

    Raises:
      ValueError: the vocabulary or the window length differs, or a token-sequence run lost its
        ``vocab.json``.
    """
    saved = read_vocab(out)
    if ds.vocab is None and saved is None:
        return
    if saved is None:
        raise ValueError(f"--resume: {pathlib.Path(out) / VOCAB} is missing, so the vocabulary "
                         f"this run was trained with is unknown. Start the run again with "
                         f"--force.")
    now = {"vocab": tuple(ds.vocab or ()), "seq_len": int(ds.x_train.shape[1])}
    if (now["vocab"], now["seq_len"]) != (saved["vocab"], saved["seq_len"]):
        raise ValueError(f"--resume: the data {ds.name!r} now has {len(now['vocab'])} tokens and "
                         f"windows of {now['seq_len']}, but the run was trained with "
                         f"{len(saved['vocab'])} tokens and windows of {saved['seq_len']} (saved "
                         f"in {pathlib.Path(out) / VOCAB}); the corpus changed. Restore it, or "
                         f"start a new run.")
