"""A saved run put to use: its network, parameters and config back from the run directory
(for inference, sampling, or a look at what it learned)."""
from __future__ import annotations

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from .. import data as datasets
from ..network import Network
from . import rundir
from .checkpoints import restore_latest
from .config import TrainConfig
from .optim import make_optimizer
from .registry import MODELS, build_model, shape_inputs

__all__ = ["load_run", "predict"]


def load_run(path):
    """A saved run, ready to use: its network, its last checkpoint's parameters and its config.

    Args:
      path: the run directory written by :func:`train` / ``fbackprop train --out``.

    Returns:
      ``(network, params, config)``: the :class:`~fbackprop.Network` rebuilt from the saved
      config (a registry model family), the parameters of the newest readable checkpoint, and
      the :class:`TrainConfig`. A token-sequence run is rebuilt from its saved vocabulary
      (``vocab.json``), without its corpus.

    Raises:
      ValueError: the directory holds no run or no readable checkpoint, or the run trained a
        ready-made network that cannot be rebuilt from its name.
    """
    if not isinstance(path, (str, os.PathLike)) or str(path) == "":
        raise TypeError(f"load_run: path must be a run directory (a str or pathlib.Path), "
                        f"received {type(path).__name__}: {path!r}.")
    if not (pathlib.Path(path) / "config.json").is_file():
        raise ValueError(f"load_run: path {str(path)!r} holds no run (no config.json there). "
                         f"Pass the out directory of an earlier fb.train(out=...) or "
                         f"fbackprop train --out run.")
    saved = rundir.read_config(path)
    fields = {k: saved[k] for k in TrainConfig.__dataclass_fields__ if k in saved}
    if fields.get("hidden") is not None:
        fields["hidden"] = tuple(fields["hidden"])
    config = TrainConfig(**fields)
    if config.model not in MODELS:
        raise ValueError(f"load_run: {path} trained the network {config.model!r}, which is not "
                         f"a model family ({', '.join(MODELS)}), so it cannot be rebuilt from "
                         f"its config; build the network yourself and restore with "
                         f"fbackprop.training.checkpoints.restore_latest.")
    vocab = rundir.read_vocab(path)
    ds = datasets.load(config.data) if vocab is None else _shapes_of(config.data, vocab)
    net = build_model(config.model, ds, config.hidden, config.features_per_step)
    params = net.init(jax.random.PRNGKey(config.seed))
    opt = make_optimizer(config.optimizer, config.lr, config.weight_decay)
    like = {"params": params, "opt_state": opt.init(params), "key": jax.random.PRNGKey(0),
            "epoch": jnp.zeros((), jnp.int32)}
    restored = restore_latest(pathlib.Path(path), like)
    if restored.epoch is None:
        raise ValueError(f"load_run: {path} holds no readable checkpoint ({restored.message()}).")
    state = restored.state
    return net, state["params"], config


def predict(net_or_run, params_or_x, x=None):
    """The network's outputs for examples shaped as the data set holds them.

    The trainer reshapes a data set's examples to the network's input shape (digits' 8×8 images
    to 64 features for an MLP, MNIST-1D's 40 samples to 5 steps of 8 for a recurrent network,
    a signal to one channel for a CNN); ``predict`` does the same, so that ``x_test`` of the
    data set goes in as it is.

    Args:
      net_or_run: a :class:`~fbackprop.Network`, or a run directory (``str`` or path) written by
        :func:`train` / ``fbackprop train --out``, loaded with :func:`load_run` (its newest
        readable checkpoint; loaded again on every call).
      params_or_x: the network's parameters; with a run directory, the examples ``x``.
      x: the examples, shape ``(n, …)`` (a batch, each example in the data set's shape or the
        network's own), floats, or int token ids for a token-sequence model; only with a
        network.

    Returns:
      The network's outputs for ``x``, shape ``(n, …)``: the logits for classes (``argmax`` over
      the last axis gives the class; for a two-class task the sign of the one logit), the
      predicted targets for regression, the logits over the vocabulary at every position for
      a transformer.

    Raises:
      ValueError: ``x`` given with a run directory or missing with a network, or examples whose
        size does not fit the network's input shape.
      TypeError: the first argument is neither a network nor a path.
    """
    if isinstance(net_or_run, Network):
        if x is None:
            raise ValueError("predict(net, params, x): received a network and parameters but "
                             "no examples x; pass them as the third argument.")
        net, params = net_or_run, params_or_x
    elif isinstance(net_or_run, (str, pathlib.PurePath)):
        if x is not None:
            raise ValueError(f"predict(run_dir, x) takes the examples as its second argument; "
                             f"received a third one as well. With a run directory "
                             f"({net_or_run}) the parameters come from its checkpoint.")
        net, params, _ = load_run(net_or_run)
        x = params_or_x
    else:
        raise TypeError(f"predict: the first argument must be an fbackprop.Network (with its "
                        f"params and x) or a run directory, received "
                        f"{type(net_or_run).__name__}.")
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("predict: x must be a batch of examples, shape (n, ...), received a "
                         "scalar; for one example pass x[None].")
    if net.input_vocab is None and not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)  # e.g. integer pixels; token ids for an embedding stay ints
    return net.apply(params, shape_inputs(x, net.input_shape))


def _shapes_of(name: str, vocab: dict) -> datasets.Dataset:
    """A stand-in for a token-sequence data set with the saved vocabulary and window length: all
    that building its network needs (two all-zero windows per split)."""
    tokens = np.zeros((2, vocab["seq_len"]), np.int32)
    return datasets.Dataset(tokens, tokens, tokens, tokens, "sequence", len(vocab["vocab"]),
                            f"the shapes of {name}", name, vocab["vocab"])
