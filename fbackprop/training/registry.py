"""The model families that ``fbackprop train`` builds, and how a data set meets a network.

:data:`FAMILIES` is the one list of model families: a name → a builder ``(ds, hidden) ->
Network`` and a one-line description. :data:`MODELS` (its keys) feeds ``fbackprop train
--model`` and ``fbackprop check --model``; adding a family means adding its constructor to
:mod:`fbackprop.models` and one entry here.

The task of a data set decides the output width, the targets and the cost
(:data:`COST_FOR_TASK`): softmax cross-entropy over one-hot classes, Fleuret's logistic loss for
two classes with y ∈ {−1, +1}, the mean squared error for regression, and for token sequences
softmax cross-entropy over the vocabulary at every scored position (the transformer family).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .. import data as datasets
from ..inputs import require_choice
from ..models import cnn, gru, lstm, mlp, rnn, transformer
from ..network import Network
from .config import data_defaults

__all__ = ["Family", "FAMILIES", "MODELS", "SEQUENCE_MODELS", "COST_FOR_TASK", "UNSCORED",
           "build_model", "shape_inputs", "targets", "out_width", "input_dtype", "clear_cache"]

COST_FOR_TASK = {"classification": "softmax_cross_entropy", "binary": "logistic",
                 "regression": "mse", "sequence": "softmax_cross_entropy"}
SEQUENCE_MODELS = ("transformer",)  # the families that read token ids and score every position
UNSCORED = -1  # a sequence target at a position that adds nothing to the cost


class Family(NamedTuple):
    """One model family.

    Attributes:
      build: ``(ds, hidden) -> Network``, the network for data set ``ds`` with hidden widths
        ``hidden`` (``None``: the family's default).
      description: what the family builds, in a sentence.
    """

    build: Callable[[datasets.Dataset, object], Network]
    description: str


def out_width(ds: datasets.Dataset) -> int:
    """The network's output width for ``ds``: one logit per class, one for two classes (the
    sign decides), or the width of the regression targets."""
    if ds.task in ("classification", "sequence"):
        return ds.n_classes
    return 1 if ds.task == "binary" else int(ds.y_train.shape[1])


def _example(name: str, ds: datasets.Dataset, *, sequence_or_image: bool = False) -> tuple:
    if ds.task == "sequence":
        raise ValueError(f"model {name!r} reads features, but data {ds.name!r} holds token "
                         f"sequences (task 'sequence'); train a sequence model on it: "
                         f"--model {SEQUENCE_MODELS[0]}.")
    example = tuple(ds.x_train.shape[1:])
    if sequence_or_image and len(example) not in (1, 2):
        raise ValueError(f"model {name!r} needs signals (n, L) or images (n, H, W); data "
                         f"{ds.name!r} has examples of shape {example}.")
    return example


def _single(hidden, name: str) -> int:
    hidden = tuple(hidden) if not isinstance(hidden, int) else (hidden,)
    if len(hidden) != 1:
        raise ValueError(f"model {name!r} takes one hidden size (its state width), received "
                         f"{hidden!r}; pass e.g. --hidden 64.")
    return hidden[0]


def _mlp(ds, hidden) -> Network:
    example = _example("mlp", ds)
    hidden = data_defaults(ds.name)["hidden"] if hidden is None else tuple(hidden)
    return mlp((math.prod(example), *hidden, out_width(ds)), "relu", "identity")


def _cnn(ds, hidden) -> Network:
    example = _example("cnn", ds, sequence_or_image=True)
    signal = len(example) == 1
    channels, kernel = ((32, 32), 5) if signal else ((16,), 3)
    try:
        return cnn((1, *example), conv_channels=channels, kernel_size=kernel, pool_size=2,
                   pool="mean", hidden=(64,) if hidden is None else tuple(hidden),
                   n_out=out_width(ds), activation="relu", output_activation="identity")
    except ValueError:  # the maps shrink below a kernel or a pooling window
        raise ValueError(f"model 'cnn' runs {len(channels)} convolution(s) of width {kernel}, "
                         f"each followed by pooling by 2; data {ds.name!r} has examples of "
                         f"shape {example}, too small for them. Pick another model (mlp, rnn, "
                         f"lstm, gru).") from None


def _recurrent(name: str, ctor, ds, hidden, features_per_step=None) -> Network:
    example = _example(name, ds, sequence_or_image=True)
    n_hidden = 64 if hidden is None else _single(hidden, name)
    n_in = example[-1] if len(example) == 2 else (features_per_step or 1)
    return ctor(n_in, n_hidden, out_width(ds), output="last")


def _rnn(ds, hidden, features_per_step=None) -> Network:
    return _recurrent("rnn", rnn, ds, hidden, features_per_step)


def _lstm(ds, hidden, features_per_step=None) -> Network:
    return _recurrent("lstm", lstm, ds, hidden, features_per_step)


def _gru(ds, hidden, features_per_step=None) -> Network:
    return _recurrent("gru", gru, ds, hidden, features_per_step)


def _transformer(ds, hidden) -> Network:
    if ds.task != "sequence":
        raise ValueError(f"model 'transformer' reads token sequences (task 'sequence', e.g. "
                         f"--data modadd or --data text:PATH); data {ds.name!r} has task "
                         f"{ds.task!r}. Pick another model (mlp, cnn, rnn, lstm, gru).")
    hidden = data_defaults(ds.name)["hidden"] if hidden is None else tuple(hidden)
    if len(set(hidden)) != 1:
        raise ValueError(f"model 'transformer' takes one width per block, all equal (d_model), "
                         f"received hidden {hidden!r}; e.g. --hidden 128,128 for two blocks of "
                         f"width 128.")
    d_model = hidden[0]
    heads = 4 if d_model % 4 == 0 else 1
    return transformer(ds.n_classes, d_model, heads, len(hidden), int(ds.x_train.shape[1]))


FAMILIES = {
    "mlp": Family(_mlp, "flat features → the hidden ReLU layers (default: the data set's) → "
                        "identity output (logits)"),
    "cnn": Family(_cnn, "one input channel, signals (1, L) or images (1, H, W); ReLU "
                        "convolutions with mean pooling, then the hidden dense layers (default "
                        "64)"),
    "rnn": Family(_rnn,
                  "Elman RNN over images as sequences of their rows (digits: 8 steps of 8) or "
                  "signals as features_per_step samples per step (MNIST-1D: 5 steps of 8 by "
                  "default); hidden is the state size (default 64); the last step is scored"),
    "lstm": Family(_lstm,
                   "LSTM over the same sequences as rnn; hidden is the state size (default 64)"),
    "gru": Family(_gru,
                  "GRU over the same sequences as rnn; hidden is the state size (default 64)"),
    "transformer": Family(_transformer,
                          "decoder-only transformer over token sequences (modadd, text:PATH): "
                          "one entry of hidden per pre-layer-norm block, all equal to d_model "
                          "(default: the data set's, 128 for modadd, 128,128 for text), 4 heads "
                          "(1 when d_model is not a multiple of 4), logits over the vocabulary "
                          "at every position"),
}
MODELS = tuple(FAMILIES)


def build_model(name: str, ds: datasets.Dataset, hidden=None,
                features_per_step=None) -> Network:
    """The network of family ``name`` for data set ``ds``.

    Args:
      name: a name in :data:`MODELS` (see :data:`FAMILIES` for what each builds).
      ds: the data set; its example shape sets the input, its task the output width.
      hidden: hidden widths (a tuple; for ``"rnn"``/``"lstm"`` one state size, an int or a
        1-tuple); ``None`` for the family's default.
      features_per_step: ``"rnn"``/``"lstm"``/``"gru"`` on 1-D signals: samples per time step
        (default 1).

    Returns:
      The :class:`~fbackprop.Network`, producing logits (no output activation). It is built
      once per recipe: the same arguments give the same object, which the compiled-epoch cache
      finds again (:func:`clear_cache` forgets the built networks).

    Raises:
      ValueError: unknown ``name``, examples of a shape the family cannot take, or several
        hidden sizes for a recurrent family.
    """
    require_choice(name, MODELS, "model")
    hidden_key = None if hidden is None else (hidden,) if isinstance(hidden, int) else tuple(hidden)
    recipe = (name, ds.name, tuple(ds.x_train.shape[1:]), ds.task, out_width(ds), hidden_key,
              features_per_step)
    if recipe not in _BUILT:
        extra = () if features_per_step is None else (features_per_step,)
        _BUILT[recipe] = FAMILIES[name].build(ds, hidden, *extra)
        while len(_BUILT) > 32:
            _BUILT.pop(next(iter(_BUILT)))
    return _BUILT[recipe]


# The built networks, one per recipe (family, data set name, example shape, task, output width,
# hidden widths, features per step), the 32 newest kept. A network's layers are functions, equal
# only to themselves, so the compiled-epoch cache (.epoch) and the sampler's (.sampling) find a
# registry network again only because it is this same object.
_BUILT: dict = {}


def clear_cache():
    """Forget the built networks (the next :func:`build_model` builds new ones)."""
    _BUILT.clear()


def shape_inputs(x: np.ndarray, input_shape) -> np.ndarray:
    """Reshape examples to the network's input shape.

    Args:
      x: examples, shape ``(n, …)``.
      input_shape: one example's shape as the network takes it; one ``None`` entry (the time
        axis of a sequence) takes whatever length the example's size gives it; ``None`` leaves
        ``x`` as it is.

    Returns:
      ``x`` reshaped to ``(n, *input_shape)``, same dtype.

    Raises:
      ValueError: the example's size does not fit ``input_shape``.
    """
    if input_shape is None:
        return x
    n, size = len(x), math.prod(x.shape[1:])
    known = math.prod(s for s in input_shape if s is not None)
    free = sum(s is None for s in input_shape)
    if free > 1 or (free == 0 and known != size) or (free == 1 and size % known):
        raise ValueError(f"the data's examples have shape {tuple(x.shape[1:])} ({size} values), "
                         f"which cannot be reshaped to the network's input shape "
                         f"{tuple(input_shape)}; pick a model that fits the data.")
    return x.reshape(n, *(size // known if s is None else s for s in input_shape))


def targets(ds: datasets.Dataset, y) -> np.ndarray:
    """The targets the cost of ``ds``'s task expects: float32, or int32 token ids for sequences.

    Args:
      ds: the data set (its task and class count).
      y: labels ``(n,)`` (int class indices, or 0/1 for ``"binary"``), regression targets
        ``(n, k)``, or for ``"sequence"`` one answer token per sequence ``(n,)`` (modadd) or the
        next token at every position ``(n, T)`` (text).

    Returns:
      ``(n, n_classes)`` one-hot rows (classification), ``(n, 1)`` with y ∈ {−1, +1} (binary,
      Fleuret's logistic loss), ``(n, k)`` (regression); float32. For sequences int32
      ``(n, T)`` token ids, :data:`UNSCORED` (−1) at positions without a target (all but the
      last for one answer per sequence): they are one-hot encoded batch by batch in the compiled
      epoch, an unscored position as a zero row, whose cost and delta are zero.
    """
    if ds.task == "sequence":
        y = np.asarray(y, np.int32)
        if y.ndim == 2:
            return y
        scored = np.full((len(y), ds.x_train.shape[1]), UNSCORED, np.int32)
        scored[:, -1] = y  # the answer follows the last token ("=")
        return scored
    if ds.task == "classification":
        return np.eye(ds.n_classes, dtype=np.float32)[y]  # one-hot
    if ds.task == "binary":
        return (2.0 * y - 1.0).astype(np.float32)[:, None]  # Fleuret's y ∈ {−1, +1}
    return np.asarray(y, np.float32)


def input_dtype(ds: datasets.Dataset):
    """The dtype the network reads ``ds``'s examples in: int32 token ids for sequences, else
    float32."""
    return np.int32 if ds.task == "sequence" else np.float32
