"""Loading a finished (or interrupted) run for inference: its network, parameters and config."""
from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp

from .. import data as datasets
from . import rundir
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
      the :class:`TrainConfig`.

    Raises:
      ValueError: the directory holds no run or no readable checkpoint, or the run trained a
        ready-made network that cannot be rebuilt from its name.
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
                         f"fbackprop.training.rundir.restore.")
    ds = datasets.load(config.data)
    net = build_model(config.model, ds, config.hidden, config.features_per_step)
    params = net.init(jax.random.PRNGKey(config.seed))
    opt = make_optimizer(config.optimizer, config.lr)
    like = {"params": params, "opt_state": opt.init(params), "key": jax.random.PRNGKey(0),
            "epoch": jnp.zeros((), jnp.int32)}
    restored = rundir.restore_latest(pathlib.Path(path), like)
    if restored.epoch is None:
        raise ValueError(f"load_run: {path} holds no readable checkpoint ({restored.message()}).")
    state = restored.state
    return net, state["params"], config
