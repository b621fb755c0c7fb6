"""The training loop: :func:`train`, its result, and the error that stops it.

Learning modes (Gordon, "Machine learning as function approximation"):

* ``"online"``: a delta is applied after every example (p_{i+1} = p_i + Δp_i), visiting the
  training examples in a fresh random order each epoch.
* ``"offline"``: the deltas of all examples are averaged and applied once per pass. Because the
  loss is the batch mean of the per-example cost, that average is the gradient of the loss on the
  whole training set: one step per epoch with a batch of every example.
* ``"minibatch"``: an epoch is a sequence of subsets drawn without replacement — "choose a new
  subset, then update" until every example has been used. When the batch size does not divide
  the training set, the last subset of the epoch is the smaller remainder.

Each epoch is one compiled function (:mod:`.epoch`); between epochs the loop records metrics,
writes checkpoints (:mod:`.rundir`) and turns a stopped epoch into :class:`TrainingStopped`.

Several local devices: when the batch size divides evenly, each batch is split across a 1-D
device mesh (``jax.sharding``), the parameters are replicated, and XLA averages the gradients
across devices. Several processes (hosts): the same mesh over every device of every process
(:mod:`.distributed`).
"""
from __future__ import annotations

import functools
import math
import pathlib
import time
import warnings
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .. import data as datasets
from ..costs import get_cost
from ..gradcheck import TOLERANCE
from ..inputs import require_choice
from ..network import Network
from . import distributed as multiprocess
from . import rundir
from .config import TrainConfig, resolve
from .epoch import _Setup, _compile, _epoch_function
from .optim import make_optimizer
from .load import load_run
from .metrics import loss_unit
from .registry import COST_FOR_TASK, MODELS, build_model, input_dtype, shape_inputs, targets
from .stops import TrainingStopped, stopped

__all__ = ["train", "TrainResult", "TrainingStopped", "CheckpointWarning", "load_run",
           "device_info"]


class TrainResult(NamedTuple):
    """What :func:`train` returns.

    Attributes:
      params: the final parameters, a pytree shaped like ``net.init(key)`` (float32 leaves).
      history: one dict per epoch: ``epoch``, ``loss`` (mean training cost over the epoch's
        steps), ``test_loss``, ``train_accuracy`` and ``test_accuracy`` (``None`` for
        regression), ``seconds``.
      config: the resolved :class:`TrainConfig`.
      net: the :class:`~fbackprop.Network` trained.
      data: the :class:`~fbackprop.data.Dataset` used.
      out: the run directory (``None`` when none was written).
      devices: how many devices each batch was split across.
      device: where it ran: ``{"platform": "cpu" | "gpu" | "tpu", "name": the device kind,
        "count": devices used}`` (see :func:`device_info`).
      restored: on resume, the :class:`~fbackprop.training.rundir.Restored` account: the epoch
        resumed from (``None``: from scratch) and the checkpoints skipped, with the reason for
        each; ``None`` for a new run.
    """

    params: Any
    history: list
    config: TrainConfig
    net: Network
    data: datasets.Dataset
    out: Any
    devices: int
    device: Optional[dict] = None
    restored: Any = None

    def __repr__(self) -> str:
        """A short summary (the fields hold the whole data set and every parameter)."""
        last = self.history[-1] if self.history else {}
        shown = [f"{k}={last[k]:.4g}" for k in ("loss", "test_loss", "test_accuracy")
                 if last.get(k) is not None]
        return (f"TrainResult(model={self.config.model!r}, data={self.config.data!r}, "
                f"epochs={last.get('epoch', 0)} of {self.config.epochs}, "
                + "".join(f"{m}, " for m in shown)
                + f"out={None if self.out is None else str(self.out)!r})")


def device_info(devices, count: int) -> dict:
    """Where a run computes, as saved in ``config.json`` and each metrics row.

    Args:
      devices: the devices available to the run (the first one is described).
      count: how many of them each batch is split across.

    Returns:
      ``{"platform": e.g. "cpu" or "gpu", "name": the device kind, e.g. "NVIDIA H100",
      "count": count}``.
    """
    first = list(devices)[0]
    return {"platform": first.platform, "name": str(getattr(first, "device_kind", first)),
            "count": int(count)}


class CheckpointWarning(UserWarning):
    """A resume skipped damaged or incomplete checkpoints, or found none and started over."""


# orbax's asynchronous checkpointing: a save returns once the arrays are on the host.
ASYNC_CHECKPOINTS = True


def _placement(devices, batch_size):
    """``(n, batch_sharding, replicated, place)``: with several devices and a batch size they
    divide, a 1-D mesh "batch" splits each batch and replicates the rest; otherwise one device
    and no sharding constraints. ``place`` puts an array where the epoch expects it."""
    if jax.process_count() > 1:
        return multiprocess.placement(batch_size)
    devices = list(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must name at least one device, received an empty list.")
    if len(devices) > 1 and batch_size % len(devices) == 0:
        mesh = Mesh(np.array(devices), ("batch",))
        replicated = NamedSharding(mesh, PartitionSpec())
        return (len(devices), NamedSharding(mesh, PartitionSpec("batch")), replicated,
                lambda a: jax.device_put(a, replicated))
    return 1, None, None, lambda a: jax.device_put(a, devices[0])


@multiprocess.reports_lost_peers
def train(model=None, data=None, *, mode=None, optimizer=None, lr=None, epochs=None,
          batch_size=None, grad=None, seed=None, hidden=None, check_every=None,
          checkpoint_every=None, features_per_step=None, weight_decay=None, out=None,
          resume=False, force=False, devices=None, distributed=None,
          progress=False) -> TrainResult:
    """Train ``model`` on ``data`` with the hand-written gradients (or ``jax.grad``, or both).

    The task decides the cost: softmax cross-entropy (classes), Fleuret's logistic loss (two
    classes, y ∈ {−1, +1}), the mean squared error (regression), softmax cross-entropy over the
    vocabulary at every scored position (token sequences). Every gradient is of the batch mean
    of the per-example cost. Each epoch runs as one compiled function; on CPU a run is
    bit-identical for the same settings and seed, resumed or not.

    Args:
      model: a name in :data:`MODELS` (default ``"mlp"``; see :func:`build_model`) or any
        :class:`~fbackprop.Network` (the data is reshaped to its ``input_shape``).
      data: ``"digits" | "mnist1d" | "xor" | "sine" | "logistic2d"`` (default ``"digits"``), the
        token sequences ``"modadd"`` or ``"text:PATH"`` (for ``model="transformer"``; their
        vocabulary is saved as ``vocab.json`` in ``out``), or a
        :class:`fbackprop.data.Dataset`.
      mode: Gordon's learning mode, ``"online"`` (one example per update), ``"offline"`` (the
        whole training set per update) or ``"minibatch"`` (subsets without replacement).
      optimizer: ``"gd"`` (Δp = −η∇φ(p), :func:`gordon_gd`), ``"sgd"``, ``"momentum"``,
        ``"adam"``, ``"adamw"``.
      lr: the learning rate η > 0.
      epochs: passes over the training set.
      batch_size: examples per update in ``"minibatch"`` mode.
      grad: ``"manual"`` (the hand-written rules), ``"autodiff"`` (``jax.grad``) or
        ``"checked"`` (manual, compared with ``jax.grad`` every ``check_every`` steps).
      seed: seed of initialisation and shuffling, an int in [0, 2³² − 1].
      hidden: hidden widths (the state size for ``"rnn"``/``"lstm"``).
      check_every: steps between comparisons with ``grad="checked"``.
      checkpoint_every: epochs between checkpoints (default: epochs // 20, at least 1); the
        last epoch is always saved.
      features_per_step: ``"rnn"``/``"lstm"``/``"gru"`` on 1-D signals: samples read per time
        step (default: the data set's, 8 for MNIST-1D, else 1).
      weight_decay: ``"adamw"``'s decoupled weight decay λ ≥ 0 (default: the data set's, 1.0
        for modadd, else 1e-4).
      out: a directory for config, metrics, plot and checkpoints; ``None`` writes nothing.
      resume: continue the run in ``out`` from its newest verified checkpoint (or from scratch
        with its saved settings when it has none); ``lr``, ``epochs`` and ``checkpoint_every``
        may change on resume (recorded in the ``"history"`` of ``config.json``).
      force: replace the run saved in ``out`` (its config, metrics, plot and checkpoints).
      devices: the devices to split batches across (default: all local ones, when the batch
        size divides evenly).
      distributed: join a multi-process run first (:func:`fbackprop.training.distributed.
        initialize`): a :class:`~fbackprop.training.distributed.Distributed` (coordinator,
        num_processes, process_id) or a dict of its fields, or ``"auto"`` where
        ``jax.distributed.initialize()`` detects the cluster (SLURM, Open MPI, Cloud TPU). Each
        batch is then split across every device of every process, each process bringing its
        rows; process 0 alone writes the run directory (see :mod:`.distributed`).
      progress: show a progress bar.

    ``None`` for a setting means its default, or on ``resume`` the saved value.

    Returns:
      A :class:`TrainResult`.

    Raises:
      TrainingStopped: a loss, gradient or parameter became non-finite, or a checked gradient
        diverged.
      ValueError: a bad setting, a run directory that already holds a run (without ``force``),
        a run directory in use by another process, or a resume whose settings differ from the
        saved ones; nothing is written in these cases.
      TypeError: ``model`` is neither a name nor a network.
      DistributedError: another process of a multi-process run died or became unreachable.
    """
    if multiprocess.initialize(distributed) and devices is not None:
        raise ValueError("devices: a multi-process run splits each batch across every device of "
                         "every process; received an explicit device list. Leave devices out.")
    if resume and out is None:
        raise ValueError("resume=True needs out: the directory of the run to continue.")
    if resume and force:
        raise ValueError("resume=True and force=True contradict each other: resume continues the "
                         "run in out, force replaces it. Pass one of them.")
    if out is not None:
        out = rundir.check_out(out)
    saved = None
    if resume:
        saved = rundir.read_config(out)
        model = saved.get("model") if model is None and saved.get("model") in MODELS else model
        data = saved.get("data") if data is None and _loadable(saved.get("data")) else data
    ds = _load_data("digits" if data is None else data, out if resume else None)
    model = "mlp" if model is None else model
    given = {"mode": mode, "optimizer": optimizer, "lr": lr, "epochs": epochs,
             "batch_size": batch_size, "grad": grad, "seed": seed, "hidden": hidden,
             "check_every": check_every, "checkpoint_every": checkpoint_every,
             "features_per_step": features_per_step, "weight_decay": weight_decay}
    if isinstance(model, Network):
        net, name = model, model.name
    elif isinstance(model, str):
        require_choice(model, MODELS, "model")
        net, name = None, model
    else:
        raise TypeError(f"model must be a name such as 'mlp' or an fbackprop.Network, received "
                        f"{type(model).__name__}.")
    config = resolve(given, saved, ds, name, net is not None)
    multiprocess.require_same({**config.as_dict(), "resume": resume, "force": force})
    if net is None:
        net = build_model(name, ds, config.hidden, config.features_per_step)
    cost = get_cost(COST_FOR_TASK[ds.task])

    n_dev, batch_sharding, replicated, put = _placement(devices, config.batch_size)
    device = device_info(jax.local_devices() if devices is None else devices, n_dev)
    x_dtype = input_dtype(ds)
    host = {"x_train": shape_inputs(ds.x_train, net.input_shape).astype(x_dtype),
            "y_train": targets(ds, ds.y_train),
            "x_test": shape_inputs(ds.x_test, net.input_shape).astype(x_dtype),
            "y_test": targets(ds, ds.y_test)}
    feed = multiprocess.Feed({k: np.asarray(v) for k, v in host.items()}, config.batch_size,
                             put, batch_sharding)

    opt = make_optimizer(config.optimizer, config.lr, config.weight_decay)
    init_key, key = jax.random.split(jax.random.PRNGKey(config.seed))
    params = net.init(init_key)
    state = {"params": params, "opt_state": opt.init(params), "key": key,
             "epoch": jnp.zeros((), jnp.int32)}
    state = jax.tree.map(put, state)
    setup = _Setup(net, cost, opt, len(ds.x_train), config.batch_size, config.grad,
                   config.check_every, TOLERANCE["float32"], ds.task,
                   ds.n_classes if ds.task == "sequence" else 0)
    epoch_fn = _compiled_epoch(setup, (batch_sharding, replicated), _compile)
    # Trace one epoch (shapes only) so that a network failing at trace time fails here, before
    # the run directory is touched.
    jax.eval_shape(epoch_fn, state["params"], state["opt_state"], state["key"],
                   jnp.zeros((), jnp.int32), feed(state["key"]))

    history, start, restored = [], 0, None
    saved_config = {**config.as_dict(), "device": device}
    if out is None:
        params = _run(config, ds, setup, epoch_fn, state, start, history, feed, None, None,
                      progress, device)
        _warn_if_near_chance(history, ds, config)
        return TrainResult(params, history, config, net, ds, None, n_dev, device)
    with multiprocess.lock(out):  # process 0 alone writes the run directory
        checkpoints = None
        try:
            if resume:
                rundir.check_vocab(out, ds)  # before anything is read or written
                restored = rundir.restore_latest(out, state, agree=multiprocess.agree)
                if restored.epoch is not None:
                    start, state = restored.epoch, restored.state
                    history = rundir.read_metrics(out, upto_epoch=start)

                def record():
                    rundir.open_for_resume(out, saved_config, start=start)
                    moved = rundir.move_aside(out, [e for e, _ in restored.skipped])
                    rundir.rewrite_metrics(out, history)
                    return moved

                restored.quarantined = multiprocess.on_primary(record, "resume the run") or []
                if restored.skipped or restored.epoch is None:
                    warnings.warn(f"{out}: {restored.message()}", CheckpointWarning, stacklevel=3)
            else:

                def start_run():
                    rundir.create(out, saved_config, force=force)
                    rundir.write_vocab(out, ds)

                multiprocess.on_primary(start_run, "create the run directory")
            checkpoints = rundir.Checkpoints(out, asynchronous=ASYNC_CHECKPOINTS)
            if start == 0:
                checkpoints.save(0, state)
            params = _run(config, ds, setup, epoch_fn, state, start, history, feed, out,
                          checkpoints, progress, device)
        finally:
            if checkpoints is not None:
                checkpoints.close()
    _warn_if_near_chance(history, ds, config)
    return TrainResult(params, history, config, net, ds, out, n_dev, device, restored)


def _warn_if_near_chance(history, ds, config):
    """Warn when a classifier ends near chance accuracy — less than a tenth of the way from
    chance to perfect (19% with 10 classes, 55% with 2): it did not learn."""
    if not history or history[-1].get("test_accuracy") is None:
        return
    chance = 1.0 / (ds.n_classes if ds.task in ("classification", "sequence") else 2)
    accuracy = history[-1]["test_accuracy"]
    if accuracy < chance + 0.1 * (1 - chance):
        warnings.warn(
            f"{config.model} on {config.data} ended at test accuracy {accuracy:.1%}, near chance "
            f"({chance:.1%}): it did not learn. Try another learning rate (--lr, now "
            f"{config.lr:g}), more epochs, another model"
            + (", or more features per step (--features-per-step)"
               if config.features_per_step is not None else "") + ".",
            RuntimeWarning, stacklevel=4)


def _load_data(data, resumed_out):
    """The data set ``data``; on resume a corpus ``"text:PATH"`` is cut into windows of the
    length the run was trained with (saved in its ``vocab.json``)."""
    saved = rundir.read_vocab(resumed_out) if resumed_out is not None else None
    if saved is not None and isinstance(data, str) and data.startswith("text:"):
        return datasets.text(data[len("text:"):], saved["seq_len"])
    return datasets.load(data)


def _loadable(name) -> bool:
    """Whether a saved run's data name can be loaded again by name."""
    return isinstance(name, str) and (name in datasets.DATASETS
                                      or name in datasets.SEQUENCE_DATASETS
                                      or name.startswith("text:"))


@functools.lru_cache(maxsize=16)
def _compiled_epoch(setup, shardings, compile_fn):
    """The jitted epoch for ``setup``, built once per process: a second ``fb.train`` with the same
    network, cost, optimizer, sizes and shardings reuses it, and jax.jit's own cache then skips
    tracing and compiling for inputs of the same shapes. (Registry models and optimizers are
    built once per recipe, so equal settings give equal keys.)"""
    return compile_fn(_epoch_function(setup, *shardings))


def _run(config, ds, setup, epoch_fn, state, start, history, feed, out, checkpoints,
         progress, device):
    """Run epochs ``start + 1 … config.epochs``; append to ``history``, save metrics and
    checkpoints; return the final parameters."""
    from tqdm import tqdm

    params, opt_state, key = state["params"], state["opt_state"], state["key"]
    last_saved = start if checkpoints is not None else None
    writes = out is not None and multiprocess.is_primary()  # metrics and plot: process 0
    bar = tqdm(total=config.epochs, initial=start, unit="epoch",
               disable=not progress or not multiprocess.is_primary(),
               desc=f"{config.model} on {config.data}", dynamic_ncols=True)
    try:
        for epoch in range(start + 1, config.epochs + 1):
            t0 = time.perf_counter()
            key, epoch_key = jax.random.split(key)
            params, opt_state, metrics, status = epoch_fn(
                params, opt_state, epoch_key, jnp.asarray(epoch - 1, jnp.int32), feed(epoch_key))
            metrics, status = jax.device_get((metrics, status))
            if status["stopped"]:
                raise stopped(setup, config, epoch, status, params, epoch_key, feed.host,
                               history, out, last_saved)
            row = {"epoch": epoch, **{k: _number(v, ds.task, k) for k, v in metrics.items()},
                   "seconds": round(time.perf_counter() - t0, 4),
                   "device": f"{device['platform']}:{device['name']}×{device['count']}"}
            history.append(row)
            if out is not None:
                if writes:
                    rundir.append_metrics(out, row)
                if epoch % config.checkpoint_every == 0 or epoch == config.epochs:
                    checkpoints.save(epoch, {"params": params, "opt_state": opt_state,
                                             "key": key,  # epoch placed like the key: replicated
                                             "epoch": jax.device_put(np.int32(epoch),
                                                                     key.sharding)})
                    last_saved = epoch
            bar.set_postfix(_postfix(row), refresh=False)
            bar.update(1)
    finally:
        bar.close()
        if writes and history:
            data = (f"text:{pathlib.Path(config.data[5:]).name}"  # no machine path in figures
                    if config.data.startswith("text:") else config.data)
            rundir.write_plot(out, history,
                              f"{config.model} on {data}, {config.mode}, {config.optimizer} "
                              f"η={config.lr:g}, {config.grad} gradients")
    return params


def _number(value, task, name):
    """A metric as a float, or ``None`` for an accuracy in regression."""
    if name.endswith("accuracy") and task == "regression":
        return None
    value = float(value)
    return value if math.isfinite(value) else None  # JSON has no NaN: written as null


def _postfix(row):
    """The progress bar's summary of an epoch's metrics."""
    def fmt(v, digits=4):
        return "nan" if v is None else f"{v:.{digits}f}"

    train_key, test_key, _, unit = loss_unit(row)
    post = {unit: fmt(row.get(train_key))}
    if row.get("test_accuracy") is not None:
        post.update(train=fmt(row["train_accuracy"], 3), test=fmt(row["test_accuracy"], 3))
    else:
        post[f"test {unit}"] = fmt(row.get(test_key))
    return post


