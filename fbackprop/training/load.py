"""A saved run put to use: its network, parameters and config back from the run directory
(for inference, sampling, or a look at what it learned)."""
from __future__ import annotations

import pathlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from .. import data as datasets
from . import rundir
from .checkpoints import CheckpointWarning, restore_latest, run_stamp
from .config import TrainConfig
from .optim import make_optimizer
from .registry import MODELS, build_model

__all__ = ["load_run"]


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
      ValueError: the directory holds no run or no readable checkpoint, the run trained a
        ready-made network that cannot be rebuilt from its name, or a checkpoint that verifies
        disagrees with the edited ``config.json`` or ``vocab.json``
        (:class:`~.checkpoints.RunChanged`).

    Warns:
      CheckpointWarning: the newest checkpoint could not be used (damaged, or still being
        written by a running training), naming it; an older verified one was loaded. A step
        that a running training rotates out while it is read is passed over silently.
    """
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
    restored = restore_latest(pathlib.Path(path), like, stamp=run_stamp(saved, vocab))
    if restored.epoch is None:
        raise ValueError(f"load_run: {path} holds no readable checkpoint ({restored.message()}).")
    if restored.skipped:
        why = "; ".join(f"epoch {e}: {r}" for e, r in restored.skipped)
        warnings.warn(f"load_run: {path}: loaded the checkpoint of epoch {restored.epoch}; "
                      f"skipped {why}.", CheckpointWarning, stacklevel=2)
    state = restored.state
    return net, state["params"], config


def _shapes_of(name: str, vocab: dict) -> datasets.Dataset:
    """A stand-in for a token-sequence data set with the saved vocabulary and window length: all
    that building its network needs (two all-zero windows per split)."""
    tokens = np.zeros((2, vocab["seq_len"]), np.int32)
    return datasets.Dataset(tokens, tokens, tokens, tokens, "sequence", len(vocab["vocab"]),
                            f"the shapes of {name}", name, vocab["vocab"])
