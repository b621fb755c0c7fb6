"""Training: Gordon's learning modes, three gradient sources, optax optimizers, whole epochs compiled.

Learning modes (Gordon, "Machine learning as function approximation"):

* ``"online"``: a delta is applied after every example (p_{i+1} = p_i + Δp_i), visiting the
  training examples in a fresh random order each epoch.
* ``"offline"``: the deltas of all examples are averaged and applied once per pass. Because the
  loss is the batch mean of the per-example cost, that average is the gradient of the loss on the
  whole training set: one step per epoch with a batch of every example.
* ``"minibatch"``: an epoch is a sequence of subsets drawn without replacement — "choose a new
  subset, then update" until every example has been used. When the batch size does not divide
  the training set, the last subset of the epoch is the smaller remainder.

Gradient sources: ``"manual"`` (the hand-written rules, :func:`fbackprop.backprop`),
``"autodiff"`` (``jax.grad`` of :func:`fbackprop.loss_fn`) and ``"checked"`` (manual, compared
against ``jax.grad`` every ``check_every`` steps; on a divergence training stops and the error
names the layers whose gradients differ).

Optimizers receive the hand-written gradient through optax: ``"gd"`` is Gordon's Δp = −η∇φ(p)
written out by hand as an optax ``GradientTransformation`` (:func:`gordon_gd`); ``"sgd"``,
``"momentum"`` (β = 0.9) and ``"adam"`` are optax's own.

Whole epochs compiled: one jitted function runs an epoch — shuffling with the key it is given,
a ``lax.scan`` over the minibatches, the remainder step, then the evaluation on the training and
test sets — on data that was placed on the device once. Its inputs keep their shapes and dtypes
from epoch to epoch, so it is traced once per run.

Several local devices: when the batch size divides evenly, each batch is split across a 1-D
device mesh (``jax.sharding``), the parameters are replicated, and XLA averages the gradients
across devices.

The module is ``training`` (not ``train``) so that ``fbackprop.train`` stays the function.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import data as datasets
from . import rundir
from .costs import get_cost
from .gradcheck import TOLERANCE, check, max_relative_error
from .models import mlp
from .network import Network, backprop, loss_fn

__all__ = ["train", "TrainResult", "TrainingStopped", "gordon_gd", "make_optimizer",
           "build_model", "shape_inputs", "MODES", "GRADS", "OPTIMIZERS", "MODELS"]

MODES = ("online", "offline", "minibatch")
GRADS = ("manual", "autodiff", "checked")
MODELS = ("mlp", "cnn", "rnn", "lstm")
COST_FOR_TASK = {"classification": "softmax_cross_entropy", "binary": "logistic",
                 "regression": "mse"}

# Defaults: global ones, then per data set (an explicit argument always wins). MNIST-1D's follow
# Greydanus 2020: Adam with η = 1e-2, batch 100, 6000 steps (150 epochs of 4000).
DEFAULTS = {"mode": "minibatch", "optimizer": "adam", "grad": "manual", "seed": 0,
            "check_every": 10, "checkpoint_every": None}  # None: every epochs // 20 (≥ 1)
DATA_DEFAULTS = {
    "digits": {"epochs": 20, "batch_size": 32, "hidden": (64,)},
    "mnist1d": {"epochs": 150, "batch_size": 100, "hidden": (100, 100), "lr": {"adam": 1e-2}},
    "xor": {"epochs": 100, "batch_size": 16, "hidden": (8,)},
    "sine": {"epochs": 60, "batch_size": 16, "hidden": (32,), "lr": {"adam": 1e-2}},
    "logistic2d": {"epochs": 50, "batch_size": 10, "hidden": ()},
    "custom": {"epochs": 20, "batch_size": 32, "hidden": (64,)},
}
LR_DEFAULTS = {"gd": 0.1, "sgd": 0.1, "momentum": 0.05, "adam": 3e-3}


def gordon_gd(learning_rate: float) -> optax.GradientTransformation:
    """Plain gradient descent as Gordon writes it: the delta Δp = −η ∇φ(p) ("Gradient
    descent"), returned as optax updates so that ``optax.apply_updates`` forms p + Δp."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(grads, state, params=None):
        del params
        return jax.tree.map(lambda g: -learning_rate * g, grads), state  # Δp = −η·∇φ(p)

    return optax.GradientTransformation(init, update)


OPTIMIZERS = {
    "gd": gordon_gd,
    "sgd": optax.sgd,
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "adam": optax.adam,
}


def _choice(value, valid, *, argument):
    if value not in valid:
        raise ValueError(f"unknown {argument} {value!r}; valid names are "
                         f"{', '.join(map(repr, valid))}.")
    return value


def _check_lr(lr, optimizer) -> float:
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0 \
            or not math.isfinite(lr):
        raise ValueError(f"the learning rate must be a finite number > 0, received {lr!r}; "
                         f"try --lr {LR_DEFAULTS[optimizer]}.")
    return float(lr)


def make_optimizer(name: str, lr: float) -> optax.GradientTransformation:
    """``"gd" | "sgd" | "momentum" | "adam"`` with learning rate ``lr`` (> 0)."""
    _choice(name, tuple(OPTIMIZERS), argument="optimizer")
    return OPTIMIZERS[name](_check_lr(lr, name))


# --- models ---------------------------------------------------------------------------------

def _model_constructor(name):
    import fbackprop

    ctor = getattr(fbackprop, name, None)
    if ctor is None:
        raise ValueError(f"model {name!r} is not available in this installation (fbackprop."
                         f"{name} is missing); use --model mlp, or install a version of fbackprop "
                         f"with the convolutional and recurrent models.")
    return ctor


def _out_width(ds: datasets.Dataset) -> int:
    if ds.task == "classification":
        return ds.n_classes
    return 1 if ds.task == "binary" else int(ds.y_train.shape[1])


def build_model(name: str, ds: datasets.Dataset, hidden=None) -> Network:
    """The network for model ``name`` on data set ``ds``.

    * ``"mlp"``: flat features → ``hidden`` ReLU layers → identity output (logits).
    * ``"cnn"``: one input channel — signals (1, L) or images (1, H, W); ReLU convolutions with
      mean pooling, then ``hidden`` dense layers.
    * ``"rnn"``, ``"lstm"``: images as sequences of their rows (digits: 8 steps of 8 features),
      signals as one feature per step (MNIST-1D: 40 steps of 1); ``hidden`` is the state size.

    ``hidden`` defaults to the data set's (MLP, CNN) or 64 (RNN, LSTM).
    """
    _choice(name, MODELS, argument="model")
    example = tuple(ds.x_train.shape[1:])
    n_out = _out_width(ds)
    if name == "mlp":
        hidden = DATA_DEFAULTS.get(ds.name, DATA_DEFAULTS["custom"])["hidden"] \
            if hidden is None else tuple(hidden)
        return mlp((math.prod(example), *hidden, n_out), "relu", "identity")
    if len(example) not in (1, 2):
        raise ValueError(f"model {name!r} needs signals (n, L) or images (n, H, W); data "
                         f"{ds.name!r} has examples of shape {example}.")
    ctor = _model_constructor(name)
    if name == "cnn":
        signal = len(example) == 1
        return ctor((1, *example), conv_channels=(32, 32) if signal else (16,),
                    kernel_size=5 if signal else 3, pool_size=2, pool="mean",
                    hidden=(64,) if hidden is None else tuple(hidden), n_out=n_out,
                    activation="relu", output_activation="identity")
    n_hidden = 64 if hidden is None else _single(hidden, name)
    n_in = example[-1] if len(example) == 2 else 1
    return ctor(n_in, n_hidden, n_out, output="last")


def _single(hidden, name):
    hidden = tuple(hidden) if not isinstance(hidden, int) else (hidden,)
    if len(hidden) != 1:
        raise ValueError(f"model {name!r} takes one hidden size (its state width), received "
                         f"{hidden!r}; pass e.g. --hidden 64.")
    return hidden[0]


def shape_inputs(x: np.ndarray, input_shape) -> np.ndarray:
    """Reshape examples ``x`` (n, …) to the network's ``input_shape``; one ``None`` entry (the
    time axis of a sequence) takes whatever length the example's size gives it."""
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


def _targets(ds: datasets.Dataset, y) -> np.ndarray:
    if ds.task == "classification":
        return np.eye(ds.n_classes, dtype=np.float32)[y]  # one-hot
    if ds.task == "binary":
        return (2.0 * y - 1.0).astype(np.float32)[:, None]  # Fleuret's y ∈ {−1, +1}
    return np.asarray(y, np.float32)


# --- the compiled epoch ---------------------------------------------------------------------

class TrainingStopped(RuntimeError):
    """Training stopped before its last epoch: a non-finite value appeared, or (``grad=
    "checked"``) the hand-written gradient diverged from ``jax.grad``. ``epoch`` and ``step``
    say where (1-based epoch, 0-based step within it); ``history`` holds the completed epochs;
    ``last_checkpoint`` is the epoch of the last good checkpoint (``None`` without ``out``);
    ``report`` is the gradient checker's report at the diverging batch (``None`` when a
    non-finite value stopped training)."""

    def __init__(self, message, *, epoch, step, history, last_checkpoint, report=None):
        super().__init__(message)
        self.epoch, self.step, self.history = epoch, step, history
        self.last_checkpoint, self.report = last_checkpoint, report


def _gradient_source(net, cost, grad):
    """(params, x, y) → (loss, ∂J/∂params) from the chosen source; J is the batch mean."""
    if grad == "autodiff":
        return jax.value_and_grad(loss_fn(net, cost))
    run = backprop(net, cost, input_grad=False)

    def manual(params, x, y):
        r = run(params, x, y)
        return r.loss, r.grads

    return manual


def _leaf_names(params) -> list:
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return (["loss"] + [f"gradient{p}" for p in paths]
            + [f"params{p} after the update" for p in paths])


def _all_finite(tree):
    return jnp.stack([jnp.all(jnp.isfinite(t)) for t in jax.tree.leaves(tree)])


class _Setup(NamedTuple):
    net: Network
    cost: Any
    optimizer: Any
    n_train: int
    batch_size: int
    grad: str
    check_every: int
    tolerance: float
    task: str


def _epoch_function(s: _Setup, batch_sharding=None, replicated=None):
    """The (un-jitted) epoch: ``epoch(params, opt_state, key, epoch_index, data)`` →
    ``(params, opt_state, metrics, status)``. ``status`` records the first step that produced a
    non-finite value or a diverging gradient; from that step on, parameters stay frozen."""
    value_and_grad = _gradient_source(s.net, s.cost, s.grad)
    manual = backprop(s.net, s.cost, input_grad=False)
    reference = jax.grad(loss_fn(s.net, s.cost))
    evaluate = loss_fn(s.net, s.cost)
    n_full, rem = divmod(s.n_train, s.batch_size)
    steps_per_epoch = n_full + (rem > 0)

    def constrain(tree, sharding):
        return tree if sharding is None else jax.lax.with_sharding_constraint(tree, sharding)

    def check_error(params, x, y):
        # jax.grad against the hand-written gradient, both at the highest matmul precision.
        with jax.default_matmul_precision("highest"):
            return max_relative_error(manual(params, x, y).grads, reference(params, x, y))

    def epoch(params, opt_state, key, epoch_index, data):
        def step(carry, idx, sharding):
            params, opt_state, status, global_step = carry
            x = constrain(data["x_train"][idx], sharding)
            y = constrain(data["y_train"][idx], sharding)
            loss, grads = value_and_grad(params, x, y)
            updates, new_opt_state = s.optimizer.update(grads, opt_state, params)
            new_params = constrain(optax.apply_updates(params, updates), replicated)
            finite = jnp.concatenate([jnp.isfinite(loss)[None], _all_finite(grads),
                                      _all_finite(new_params)])
            if s.grad == "checked":
                error = jax.lax.cond(global_step % s.check_every == 0, check_error,
                                     lambda *_: jnp.zeros((), jnp.float32), params, x, y)
            else:
                error = jnp.zeros((), jnp.float32)
            bad = ~jnp.all(finite) | (error > s.tolerance)
            go = ~status["stopped"] & ~bad  # after a failure, parameters stay frozen
            first = ~status["stopped"] & bad
            now = {"stopped": jnp.bool_(True), "step": global_step, "finite": finite,
                   "error": error.astype(jnp.float32)}
            status = jax.tree.map(lambda a, b: jnp.where(first, a, b), now, status)
            params, opt_state = jax.tree.map(lambda a, b: jnp.where(go, a, b),
                                             (new_params, new_opt_state), (params, opt_state))
            return (params, opt_state, status, global_step + 1), loss

        perm = jax.random.permutation(key, s.n_train)  # subsets drawn without replacement
        first_step = epoch_index * steps_per_epoch
        status = {"stopped": jnp.bool_(False), "step": first_step,
                  "finite": jnp.ones((1 + 2 * len(jax.tree.leaves(params)),), bool),
                  "error": jnp.zeros((), jnp.float32)}
        carry = (params, opt_state, status, first_step)
        carry, losses = jax.lax.scan(lambda c, i: step(c, i, batch_sharding), carry,
                                     perm[:n_full * s.batch_size].reshape(n_full, s.batch_size))
        total = jnp.sum(losses) * s.batch_size
        if rem:  # Gordon: the last subset is what remains unused
            carry, last = step(carry, perm[n_full * s.batch_size:], None)
            total = total + last * rem
        params, opt_state, status, _ = carry
        status = dict(status, step=status["step"] - first_step)
        metrics = {"loss": total / s.n_train,
                   "test_loss": evaluate(params, data["x_test"], data["y_test"])}
        for split in ("train", "test"):
            metrics[f"{split}_accuracy"] = _accuracy(
                s.task, s.net.apply(params, data[f"x_{split}"]), data[f"y_{split}"])
        return params, opt_state, metrics, status

    return epoch


def _accuracy(task, out, y):
    if task == "classification":
        return jnp.mean(jnp.argmax(out, -1) == jnp.argmax(y, -1))
    if task == "binary":
        return jnp.mean((out[:, 0] > 0) == (y[:, 0] > 0))
    return jnp.full((), jnp.nan, jnp.float32)


def _compile(fn):
    """Jit the epoch (tests wrap ``fn`` with ``chex.assert_max_traces`` here)."""
    return jax.jit(fn)


# --- configuration --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The resolved settings of a run (saved as ``config.json`` in its directory)."""

    model: str
    data: str
    mode: str
    optimizer: str
    lr: float
    epochs: int
    batch_size: int
    grad: str
    seed: int
    hidden: Optional[tuple]
    check_every: int
    checkpoint_every: int

    def as_dict(self) -> dict:
        """The settings as JSON-ready values (what ``config.json`` holds)."""
        d = dataclasses.asdict(self)
        d["hidden"] = None if self.hidden is None else list(self.hidden)
        return d


def _positive_int(value, argument, fix):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{argument} must be an int ≥ 1, received {value!r}; {fix}")
    return int(value)


def _seed(value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"seed must be an int ≥ 0, received {value!r}; e.g. --seed 0.")
    return int(value)


def _resolve(given: dict, saved: Optional[dict], ds, net_name, model_is_network) -> TrainConfig:
    """Explicit arguments, then the saved config (on resume), then the defaults."""
    base = dict(DEFAULTS, **DATA_DEFAULTS.get(ds.name, DATA_DEFAULTS["custom"]))
    base["hidden"] = None  # the model's own default
    cfg = {k: v for k, v in base.items()}
    if saved:
        cfg.update({k: v for k, v in saved.items() if k in given})
    cfg.update({k: v for k, v in given.items() if v is not None})
    _choice(cfg["mode"], MODES, argument="mode")
    _choice(cfg["grad"], GRADS, argument="grad")
    _choice(cfg["optimizer"], tuple(OPTIMIZERS), argument="optimizer")
    if cfg.get("lr") is None or isinstance(cfg["lr"], dict):
        cfg["lr"] = (cfg.get("lr") or {}).get(cfg["optimizer"], LR_DEFAULTS[cfg["optimizer"]])
    n = len(ds.x_train)
    forced = {"online": 1, "offline": n}.get(cfg["mode"])
    if forced is not None:
        if given.get("batch_size") not in (None, forced):
            raise ValueError(f"mode {cfg['mode']!r} uses a batch of {forced} (Gordon: "
                             f"{'one example' if forced == 1 else 'the whole training set'} per "
                             f"update); received batch_size {given['batch_size']!r}. Drop "
                             f"--batch-size or use --mode minibatch.")
        cfg["batch_size"] = forced
    bs = _positive_int(cfg["batch_size"], "batch_size",
                       f"use a batch size between 1 and the {n} training examples.")
    if bs > n:
        raise ValueError(f"batch_size {bs} is larger than the training set ({n} examples of "
                         f"{ds.name!r}); use a batch size between 1 and {n}.")
    hidden = cfg.get("hidden")
    if hidden is not None:
        hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
        for h in hidden:
            _positive_int(h, "each hidden width", "e.g. --hidden 64,32.")
    return TrainConfig(
        model=net_name, data=ds.name, mode=cfg["mode"], optimizer=cfg["optimizer"],
        lr=_check_lr(cfg["lr"], cfg["optimizer"]),
        epochs=_positive_int(cfg["epochs"], "epochs", "e.g. --epochs 20."),
        batch_size=bs, grad=cfg["grad"],
        seed=_seed(cfg["seed"]), hidden=None if model_is_network else hidden,
        check_every=_positive_int(cfg["check_every"], "check_every", "e.g. 10."),
        checkpoint_every=_positive_int(cfg["checkpoint_every"] or max(1, cfg["epochs"] // 20),
                                       "checkpoint_every", "e.g. 1."))


# --- the run --------------------------------------------------------------------------------

class TrainResult(NamedTuple):
    """What :func:`train` returns.

    params:  the final parameters.
    history: one dict per epoch (epoch, loss, train_accuracy, test_accuracy, test_loss,
             seconds); accuracies are ``None`` for regression.
    config:  the resolved :class:`TrainConfig`.
    net:     the :class:`~fbackprop.Network` trained.
    data:    the :class:`~fbackprop.data.Dataset` used.
    out:     the run directory (``None`` when none was written).
    devices: how many devices each batch was split across.
    """

    params: Any
    history: list
    config: TrainConfig
    net: Network
    data: datasets.Dataset
    out: Any
    devices: int


def _placement(devices, batch_size):
    """``(n, batch_sharding, replicated, place)``: with several devices and a batch size they
    divide, a 1-D mesh "batch" splits each batch and replicates the rest; otherwise one device
    and no sharding constraints. ``place`` puts an array where the epoch expects it."""
    devices = list(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must name at least one device, received an empty list.")
    if len(devices) > 1 and batch_size % len(devices) == 0:
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        mesh = Mesh(np.array(devices), ("batch",))
        replicated = NamedSharding(mesh, PartitionSpec())
        return (len(devices), NamedSharding(mesh, PartitionSpec("batch")), replicated,
                lambda a: jax.device_put(a, replicated))
    return 1, None, None, lambda a: jax.device_put(a, devices[0])


def train(model=None, data=None, *, mode=None, optimizer=None, lr=None, epochs=None,
          batch_size=None, grad=None, seed=None, hidden=None, check_every=None,
          checkpoint_every=None, out=None, resume=False, devices=None,
          progress=False) -> TrainResult:
    """Train ``model`` on ``data`` and return the final parameters and the history.

    ``model`` (default ``"mlp"``): ``"mlp" | "cnn" | "rnn" | "lstm"`` (:func:`build_model`) or any
    :class:`~fbackprop.Network` (the data is reshaped to its ``input_shape``). ``data``
    (default ``"digits"``): ``"digits" | "mnist1d" | "xor" | "sine" | "logistic2d"`` or a
    :class:`fbackprop.data.Dataset`.
    The task decides the cost: softmax cross-entropy (classes), Fleuret's logistic loss (two
    classes, y ∈ {−1, +1}), mean squared error (regression). Every gradient is of the batch mean
    of the per-example cost.

    ``mode`` ``"online" | "offline" | "minibatch"``; ``optimizer`` ``"gd" | "sgd" | "momentum" |
    "adam"`` with learning rate ``lr``; ``grad`` ``"manual" | "autodiff" | "checked"`` (checked:
    compared with ``jax.grad`` every ``check_every`` steps). ``None`` means the default, or on
    ``resume`` the saved value.

    ``out``: a directory for config, metrics, plot and checkpoints (every ``checkpoint_every``
    epochs, and after the last); ``None`` writes nothing. ``resume=True`` continues the run in
    ``out`` from its last complete checkpoint, bit-identically on CPU. ``devices``: the devices
    to split batches across (default: all local ones, when the batch size divides evenly).

    Raises :class:`TrainingStopped` when a loss, gradient or parameter becomes non-finite, or a
    checked gradient diverges; ``ValueError``/``TypeError`` for bad settings.
    """
    if resume and out is None:
        raise ValueError("resume=True needs out: the directory of the run to continue.")
    saved = None
    if resume:
        saved = rundir.read_config(out)
        model = saved.get("model") if model is None and saved.get("model") in MODELS else model
        data = saved.get("data") if data is None and saved.get("data") in datasets.DATASETS \
            else data
    ds = datasets.load("digits" if data is None else data)
    model = "mlp" if model is None else model
    given = {"mode": mode, "optimizer": optimizer, "lr": lr, "epochs": epochs,
             "batch_size": batch_size, "grad": grad, "seed": seed, "hidden": hidden,
             "check_every": check_every, "checkpoint_every": checkpoint_every}
    if isinstance(model, Network):
        net, name = model, model.name
    elif isinstance(model, str):
        _choice(model, MODELS, argument="model")
        net, name = None, model
    else:
        raise TypeError(f"model must be a name such as 'mlp' or an fbackprop.Network, received "
                        f"{type(model).__name__}.")
    config = _resolve(given, saved, ds, name, net is not None)
    if net is None:
        net = build_model(name, ds, config.hidden)
    cost = get_cost(COST_FOR_TASK[ds.task])

    n_dev, batch_sharding, replicated, put = _placement(devices, config.batch_size)
    data_dev = {"x_train": shape_inputs(ds.x_train, net.input_shape),
                "y_train": _targets(ds, ds.y_train),
                "x_test": shape_inputs(ds.x_test, net.input_shape),
                "y_test": _targets(ds, ds.y_test)}
    data_dev = {k: put(np.asarray(v, np.float32)) for k, v in data_dev.items()}

    opt = make_optimizer(config.optimizer, config.lr)
    init_key, key = jax.random.split(jax.random.PRNGKey(config.seed))
    params = net.init(init_key)
    state = {"params": params, "opt_state": opt.init(params), "key": key,
             "epoch": jnp.zeros((), jnp.int32)}
    state = jax.tree.map(put, state)

    # Everything is checked before the run directory is touched.
    manager, history, start = None, [], 0
    if out is not None:
        if resume:
            out = rundir.open_for_resume(out, config.as_dict())
        else:
            out = rundir.create(out, config.as_dict())
        manager = rundir.checkpoint_manager(out)
    try:
        if resume:
            start, state = rundir.restore_latest(manager, state)
            history = rundir.read_metrics(out, upto_epoch=start)
            rundir.rewrite_metrics(out, history)
        elif manager is not None:
            rundir.save(manager, 0, state)
        params = _run(config, net, cost, opt, ds, state, start, history, data_dev, out, manager,
                      (batch_sharding, replicated), progress)
    finally:
        if manager is not None:
            manager.close()
    return TrainResult(params, history, config, net, ds, out, n_dev)


def _run(config, net, cost, opt, ds, state, start, history, data_dev, out, manager, shardings,
         progress):
    from tqdm import tqdm

    setup = _Setup(net, cost, opt, len(ds.x_train), config.batch_size, config.grad,
                   config.check_every, TOLERANCE["float32"], ds.task)
    epoch_fn = _compile(_epoch_function(setup, *shardings))
    params, opt_state, key = state["params"], state["opt_state"], state["key"]
    last_saved = start if manager is not None else None
    bar = tqdm(total=config.epochs, initial=start, disable=not progress, unit="epoch",
               desc=f"{config.model} on {config.data}", dynamic_ncols=True)
    try:
        for epoch in range(start + 1, config.epochs + 1):
            t0 = time.perf_counter()
            key, epoch_key = jax.random.split(key)
            params, opt_state, metrics, status = epoch_fn(
                params, opt_state, epoch_key, jnp.asarray(epoch - 1, jnp.int32), data_dev)
            metrics, status = jax.device_get((metrics, status))
            if status["stopped"]:
                raise _stopped(setup, config, epoch, status, params, epoch_key, data_dev,
                               history, out, last_saved)
            row = {"epoch": epoch, **{k: _number(v, ds.task, k) for k, v in metrics.items()},
                   "seconds": round(time.perf_counter() - t0, 4)}
            history.append(row)
            if out is not None:
                rundir.append_metrics(out, row)
                if epoch % config.checkpoint_every == 0 or epoch == config.epochs:
                    rundir.save(manager, epoch, {"params": params, "opt_state": opt_state,
                                                 "key": key, "epoch": jnp.asarray(epoch,
                                                                                  jnp.int32)})
                    last_saved = epoch
            bar.set_postfix(_postfix(row), refresh=False)
            bar.update(1)
    finally:
        bar.close()
        if out is not None and history:
            rundir.write_plot(out, history,
                              f"{config.model} on {config.data}, {config.mode}, {config.optimizer} "
                              f"η={config.lr:g}, {config.grad} gradients")
    return params


def _number(value, task, name):
    if name.endswith("accuracy") and task == "regression":
        return None
    return float(value)


def _postfix(row):
    post = {"loss": f"{row['loss']:.4f}"}
    if row.get("test_accuracy") is not None:
        post.update(train=f"{row['train_accuracy']:.3f}", test=f"{row['test_accuracy']:.3f}")
    else:
        post.update(test_loss=f"{row['test_loss']:.4f}")
    return post


def _stopped(setup, config, epoch, status, params, epoch_key, data_dev, history, out,
             last_saved):
    """The error for a stopped epoch: which values went non-finite, or which layers'
    gradients differ from jax.grad (located by the gradient checker, fbackprop.check)."""
    step = int(status["step"])
    where = f"epoch {epoch}, step {step}"
    report = None
    if not np.all(status["finite"]):
        names = [n for n, ok in zip(_leaf_names(params), status["finite"]) if not ok]
        msg = (f"training stopped at {where}: non-finite values in {', '.join(names)}. "
               f"The learning rate ({config.optimizer}, lr={config.lr:g}) may be too large; "
               f"lower --lr.")
    else:
        # Locate the wrong rule with the gradient checker, in float64, at the very batch that
        # diverged: each layer's rules are compared with jax.vjp at the autodiff delta, so the
        # failing layer is the one whose own rule is wrong, not merely the lowest affected one.
        x, y = _batch_at(setup, step, epoch_key, data_dev)
        report = check(setup.net, setup.cost, params, x, y, dtype="float64")
        located = (f"The gradient checker locates it: {report.failure_message()}"
                   if not report.ok else
                   "In float64 the checker finds every layer's rules correct at this batch, so "
                   "the divergence is float32 rounding: raise the check tolerance.")
        msg = (f"training stopped at {where}: the hand-written gradient differs from jax.grad "
               f"(relative error {float(status['error']):.2e} > {setup.tolerance:g}). {located}")
    if last_saved is not None:
        msg += (f" The last good checkpoint (epoch {last_saved}) is in "
                f"{out / rundir.CHECKPOINTS}.")
    return TrainingStopped(msg, epoch=epoch, step=step, history=history,
                           last_checkpoint=last_saved, report=report)


def _batch_at(setup, step, epoch_key, data_dev):
    """The batch that step ``step`` of the epoch shuffled with ``epoch_key`` used."""
    perm = np.asarray(jax.random.permutation(epoch_key, setup.n_train))
    idx = perm[step * setup.batch_size:(step + 1) * setup.batch_size]
    return data_dev["x_train"][idx], data_dev["y_train"][idx]
