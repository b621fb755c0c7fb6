"""The settings of a training run: defaults, per-data-set defaults, their resolution into a
:class:`TrainConfig`, and the :class:`Settings` every later step of a run reads.

An explicit argument always wins; on resume the saved run's value comes next; then the data
set's default (:data:`DATA_DEFAULTS`), then the global one (:data:`DEFAULTS`). Gordon's learning
modes fix the batch size: ``"online"`` uses one example per update, ``"offline"`` the whole
training set, ``"minibatch"`` the ``batch_size`` given.
"""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from ..inputs import require_bool, require_choice, require_int, require_positive_int
from .optim import LR_DEFAULTS, OPTIMIZERS, PRECISIONS, check_lr, check_weight_decay

__all__ = ["MODES", "GRADS", "RECURRENT", "DEFAULTS", "DATA_DEFAULTS", "TrainConfig", "Settings",
           "resolve", "data_defaults", "CHECKPOINT_SECONDS", "checkpoint_due"]

MODES = ("online", "offline", "minibatch")
GRADS = ("manual", "autodiff", "checked")
RECURRENT = ("rnn", "lstm", "gru")  # families that read a signal as a sequence of steps

# Defaults: global ones, then per data set (an explicit argument always wins). MNIST-1D's follow
# Greydanus 2020: Adam with η = 1e-2, batch 100, 6000 steps (150 epochs of 4000). Its recurrent
# networks read 8 features per step (5 steps of the 40-sample signal): over 40 steps of one
# feature a plain tanh RNN barely learns (Jin §3.2's vanishing and exploding deltas).
# checkpoint_every None: every epochs // 20 (≥ 1), no sooner than CHECKPOINT_SECONDS after the
# last save (one process), and always the last epoch (see checkpoint_due)
DEFAULTS = {"mode": "minibatch", "optimizer": "adam", "grad": "manual", "seed": 0,
            "check_every": 10, "checkpoint_every": None, "shard_params": False,
            "precision": "fp32", "recompute": False}
DATA_DEFAULTS = {
    "digits": {"epochs": 20, "batch_size": 32, "hidden": (64,)},
    "mnist1d": {"epochs": 150, "batch_size": 100, "hidden": (100, 100), "lr": {"adam": 1e-2},
                "features_per_step": 8, "lr_recurrent": {"adam": 3e-3}},
    "xor": {"epochs": 100, "batch_size": 16, "hidden": (8,)},
    "sine": {"epochs": 60, "batch_size": 16, "hidden": (32,), "lr": {"adam": 1e-2}},
    "logistic2d": {"epochs": 50, "batch_size": 10, "hidden": ()},
    "custom": {"epochs": 20, "batch_size": 32, "hidden": (64,)},
    # Modular addition mod 97, half the pairs for training: AdamW with a strong weight decay
    # (λ = 1, as Power et al. 2022 found best) generalises; without decay the network memorises
    # its training half long before it (if ever) generalises.
    "modadd": {"epochs": 150, "batch_size": 512, "hidden": (128,),
               "optimizer": "adamw", "lr": {"adamw": 1e-3}, "weight_decay": {"adamw": 1.0}},
    # A character-level corpus (text:PATH): windows of 64 characters, next-character targets.
    "text": {"epochs": 20, "batch_size": 32, "hidden": (128, 128), "optimizer": "adamw",
             "lr": {"adamw": 3e-3}, "weight_decay": {"adamw": 0.01}},
}


# A default checkpoint costs tens of milliseconds (orbax's save and a checksum): at most one per
# this many seconds keeps that near 1% of a run, and a stop loses at most these seconds of work.
CHECKPOINT_SECONDS = 10.0


def checkpoint_due(every: int | None, epochs: int, epoch: int, since_save: float,
                   processes: int = 1) -> bool:
    """Whether the run saves a checkpoint after ``epoch``.

    The last epoch is always saved. An explicit ``every`` saves each ``every``-th epoch. The
    default (``every=None``) saves each ``epochs // 20``-th epoch (at least every epoch) once
    :data:`CHECKPOINT_SECONDS` have passed since the last save, so a run of a few seconds writes
    one checkpoint, at its end; with several processes the clock is left out, since every
    process must make the same decision without talking to the others.

    Args:
      every: ``checkpoint_every`` (``None``: the default).
      epochs: the run's last epoch.
      epoch: the epoch just finished.
      since_save: seconds since the last save (or since the epochs started).
      processes: how many processes train the run.

    Returns:
      ``True`` to save.
    """
    if epoch == epochs:
        return True
    if every is not None:
        return epoch % every == 0
    return epoch % max(1, epochs // 20) == 0 and (processes > 1
                                                   or since_save >= CHECKPOINT_SECONDS)


def data_defaults(name: str) -> dict:
    """The defaults of data set ``name`` (``"text:PATH"`` takes those of ``"text"``; a data set
    not listed, those of ``"custom"``)."""
    name = "text" if name.startswith("text:") else name
    return DATA_DEFAULTS.get(name, DATA_DEFAULTS["custom"])


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The resolved settings of a run (saved as ``config.json`` in its directory).

    Attributes:
      model: the model family (a name in :data:`fbackprop.training.MODELS`) or a network's name.
      data: the data set's name.
      mode: Gordon's learning mode, ``"online" | "offline" | "minibatch"``.
      optimizer: ``"gd" | "sgd" | "momentum" | "adam" | "adamw"``.
      lr: the learning rate η > 0.
      epochs: passes over the training set.
      batch_size: examples per update (1 online, the training set offline).
      grad: the gradient source, ``"manual" | "autodiff" | "checked"``.
      seed: seed of initialisation and shuffling, in [0, 2³² − 1].
      hidden: hidden widths (the state size for RNN/LSTM); ``None`` for the model's default or
        when a ready-made network is trained.
      check_every: steps between comparisons with ``jax.grad`` (``grad="checked"``).
      checkpoint_every: epochs between checkpoints; ``None`` (the default) for every
        ``epochs // 20`` epochs but no sooner than :data:`CHECKPOINT_SECONDS` after the last
        save (:func:`checkpoint_due`).
      features_per_step: for ``"rnn"``/``"lstm"`` on 1-D signals, how many consecutive samples
        each time step reads (the signal of length L becomes L / features_per_step steps);
        ``None`` otherwise.
      weight_decay: ``"adamw"``'s decoupled weight decay λ (``None`` for other optimizers).
      shard_params: split each parameter and its optimizer state over the devices that split
        the batch (:mod:`.sharding`); ``False`` replicates them.
      precision: ``"fp32"``, or mixed precision ``"bf16" | "fp16"`` (float32 master weights,
        :class:`.optim.Policy`).
      recompute: the hand-written backward recomputes what its rules derive from each
        layer's input instead of keeping the forward's copy (``fbackprop.manual_grad``'s
        ``recompute``): less memory, the same values.
    """

    model: str
    data: str
    mode: str
    optimizer: str
    lr: float
    epochs: int
    batch_size: int
    grad: str
    seed: int
    hidden: tuple | None
    check_every: int
    checkpoint_every: int | None
    features_per_step: int | None = None
    weight_decay: float | None = None
    shard_params: bool = False
    precision: str = "fp32"
    recompute: bool = False

    def as_dict(self) -> dict:
        """The settings as JSON-ready values (what ``config.json`` holds).

        Returns:
          A dict of the fields, ``hidden`` as a list (or ``None``).
        """
        d = dataclasses.asdict(self)
        d["hidden"] = None if self.hidden is None else list(self.hidden)
        return d



@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a run needs, settled and checked before anything is created: the one argument
    of the steps of :mod:`.loop`.

    Attributes:
      config: the resolved :class:`TrainConfig`.
      data: the :class:`~fbackprop.data.Dataset` trained on.
      net: the :class:`~fbackprop.Network` trained.
      out: the absolute run directory, or ``None`` (nothing is written).
      resume: continue the run saved in ``out``.
      force: replace the run saved in ``out``.
      saved: on resume, the ``config.json`` of the run (read once), else ``None``.
      devices: the local devices to split batches across (``None``: all of them).
      progress: show a progress bar.
    """

    config: TrainConfig
    data: object
    net: object
    out: pathlib.Path | None = None
    resume: bool = False
    force: bool = False
    saved: dict | None = None
    devices: tuple | None = None
    progress: bool = False

def resolve(given: dict, saved: dict | None, ds, net_name: str,
            model_is_network: bool) -> TrainConfig:
    """Resolve and check the settings of a run.

    Args:
      given: the arguments of :func:`~fbackprop.train`, ``None`` where not given.
      saved: the saved run's ``config.json`` on resume, else ``None``.
      ds: the :class:`~fbackprop.data.Dataset` (its name picks the defaults, its size bounds
        the batch size).
      net_name: the model family or the network's name.
      model_is_network: a ready-made network is trained (``hidden`` is then ``None``).

    Returns:
      The :class:`TrainConfig`.

    Raises:
      ValueError: an unknown name, a value out of range, or a batch size that contradicts the
        learning mode; each message says what was expected, what was received and the fix.
    """
    cfg = dict(DEFAULTS, **data_defaults(ds.name))
    cfg["hidden"] = None  # the model's own default
    if saved:
        cfg.update({k: v for k, v in saved.items() if k in given})
    cfg.update({k: v for k, v in given.items() if v is not None})
    require_choice(cfg["mode"], MODES, "mode")
    require_choice(cfg["grad"], GRADS, "grad")
    require_choice(cfg["optimizer"], OPTIMIZERS, "optimizer")
    require_choice(cfg["precision"], PRECISIONS, "precision")
    if given.get("weight_decay") is None and isinstance(cfg.get("weight_decay"), dict):
        cfg["weight_decay"] = cfg["weight_decay"].get(cfg["optimizer"])  # the data set's λ
    if net_name in RECURRENT and given.get("lr") is None and not saved:
        cfg["lr"] = cfg.get("lr_recurrent", cfg.get("lr"))
    if cfg.get("lr") is None or isinstance(cfg["lr"], dict):
        cfg["lr"] = (cfg.get("lr") or {}).get(cfg["optimizer"], LR_DEFAULTS[cfg["optimizer"]])
    features = _features_per_step(cfg, given, ds, net_name)
    bs = _batch_size(cfg, given, ds)
    hidden = _hidden(cfg.get("hidden"), given, net_name, model_is_network)
    return TrainConfig(
        model=net_name, data=ds.name, mode=cfg["mode"], optimizer=cfg["optimizer"],
        lr=check_lr(cfg["lr"], cfg["optimizer"]),
        epochs=require_positive_int(cfg["epochs"], "epochs", fix="E.g. --epochs 20."),
        batch_size=bs, grad=cfg["grad"],
        seed=require_int(cfg["seed"], "seed", minimum=0, maximum=2**32 - 1,
                         fix="E.g. --seed 0."),
        hidden=None if model_is_network else hidden,
        check_every=require_positive_int(cfg["check_every"], "check_every", fix="E.g. 10."),
        checkpoint_every=None if cfg["checkpoint_every"] is None else require_positive_int(
            cfg["checkpoint_every"], "checkpoint_every",
            fix=f"E.g. --checkpoint-every 1 (leave it out for the default: epochs // 20, at "
                f"most one save per {CHECKPOINT_SECONDS:g} seconds)."),
        features_per_step=features,
        weight_decay=check_weight_decay(cfg.get("weight_decay"), cfg["optimizer"]),
        shard_params=_shard_params(cfg["shard_params"]),
        precision=cfg["precision"],
        recompute=require_bool(cfg.get("recompute", False), "recompute",
                               fix="Pass recompute=True or False (--recompute)."))


def _hidden(hidden, given: dict, net_name: str, model_is_network: bool):
    """The hidden widths checked: a tuple of positive ints, or ``None`` (the model's default);
    refused with a ready-made network, whose widths are fixed."""
    if model_is_network and given.get("hidden") is not None:
        raise ValueError(f"hidden applies to a model family such as 'mlp', received "
                         f"hidden={given['hidden']!r} with a ready-made network ({net_name}), "
                         f"whose widths are fixed. Drop hidden, or build the network with the "
                         f"widths you want.")
    if hidden is None:
        return None
    hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    for h in hidden:
        require_positive_int(h, "each hidden width", fix="E.g. --hidden 64,32.")
    return hidden


def _shard_params(value) -> bool:
    """``shard_params`` checked: a bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"shard_params must be True or False (--shard-params), received "
                        f"{value!r} of type {type(value).__name__}.")
    return bool(value)


def _features_per_step(cfg: dict, given: dict, ds, net_name: str) -> int | None:
    """The features per time step of a recurrent family on 1-D signals (``None`` otherwise);
    ``ValueError`` when one is given where it does not apply or does not divide the signal."""
    example = tuple(ds.x_train.shape[1:])
    applies = net_name in RECURRENT and len(example) == 1
    if not applies:
        if given.get("features_per_step") is not None:
            raise ValueError(f"features_per_step applies to the recurrent models {RECURRENT} on "
                             f"1-D signals; received {given['features_per_step']!r} for model "
                             f"{net_name!r} on {ds.name!r} (examples of shape {example}). Drop "
                             f"--features-per-step.")
        return None
    k = require_positive_int(cfg.get("features_per_step") or 1, "features_per_step",
                             fix="E.g. --features-per-step 8.")
    if example[0] % k:
        raise ValueError(f"features_per_step must divide the signal length {example[0]} of "
                         f"{ds.name!r}, received {k}; e.g. --features-per-step "
                         f"{next(d for d in (8, 4, 2, 1) if example[0] % d == 0)}.")
    return k


def _batch_size(cfg: dict, given: dict, ds) -> int:
    """The batch size Gordon's learning mode fixes (1 online, the training set offline) or the
    one given (minibatch), checked against the training set's size."""
    n = len(ds.x_train)
    forced = {"online": 1, "offline": n}.get(cfg["mode"])
    if forced is not None:
        if given.get("batch_size") not in (None, forced):
            raise ValueError(f"mode {cfg['mode']!r} uses a batch of {forced} (Gordon: "
                             f"{'one example' if forced == 1 else 'the whole training set'} per "
                             f"update); received batch_size {given['batch_size']!r}. Drop "
                             f"--batch-size or use --mode minibatch.")
        return forced
    bs = require_positive_int(cfg["batch_size"], "batch_size",
                              fix=f"Use a batch size between 1 and the {n} training examples.")
    if bs > n:
        raise ValueError(f"batch_size {bs} is larger than the training set ({n} examples of "
                         f"{ds.name!r}); use a batch size between 1 and {n}.")
    return bs
