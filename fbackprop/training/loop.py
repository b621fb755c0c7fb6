"""The training loop: :func:`train` as four named steps, its result, and the errors and warnings
of a run.

Learning modes (Gordon, "Machine learning as function approximation"):

* ``"online"``: a delta is applied after every example (p_{i+1} = p_i + Δp_i), visiting the
  training examples in a fresh random order each epoch.
* ``"offline"``: the deltas of all examples are averaged and applied once per pass. Because the
  loss is the batch mean of the per-example cost, that average is the gradient of the loss on the
  whole training set: one step per epoch with a batch of every example.
* ``"minibatch"``: an epoch is a sequence of subsets drawn without replacement — "choose a new
  subset, then update" until every example has been used. When the batch size does not divide
  the training set, the last subset of the epoch is the smaller remainder.

The steps of a run, in the order :func:`train` takes them:

1. :func:`settle` — join the other processes, check ``out``, read a resumed run's
   ``config.json`` and ``vocab.json`` (once each), load the data, resolve the settings
   (:func:`.config.resolve`) and build the network: a :class:`.config.Settings`.
2. :func:`build_state` — place the data (:mod:`.batches`), initialise the parameters and the
   optimizer state, and trace the compiled epoch (:mod:`.epoch`) once, so that a network failing
   at trace time fails here. Nothing is created or written before this step ends; the command
   line prints its first lines only then (:func:`prepare` is steps 1 and 2).
3. :func:`open_run` — under the run directory's lock, create it, or resume it from its newest
   verified checkpoint (:mod:`.rundir`, :mod:`.checkpoints`, :mod:`.metrics`).
4. :func:`run_epochs` — run the compiled epochs, recording metrics and checkpoints, and turn a
   stopped epoch into :class:`TrainingStopped`.
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
import time
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import data as datasets
from ..costs import get_cost
from ..gradcheck import BUDGET, BUDGET_FLOOR, TOLERANCE, check
from ..inputs import require_bool, require_choice
from ..network import Network
from . import distributed as multiprocess
from . import metrics, rundir
from .batches import Feed, batch_at, placement
from .checkpoints import (
    CheckpointError,
    Checkpoints,
    CheckpointWarning,
    move_aside,
    restore_latest,
    run_stamp,
)
from .config import CHECKPOINT_SECONDS, Settings, TrainConfig, checkpoint_due, resolve
from .epoch import EpochSetup, compiled_epoch, encode_targets, leaf_names
from .optim import get_policy
from .registry import COST_FOR_TASK, MODELS, build_model, input_dtype, shape_inputs, targets
from .sharding import ParamSharding, host_value

__all__ = ["train", "prepare", "train_prepared", "settle", "build_state", "open_run",
           "run_epochs", "Prepared", "Built", "Opened", "TrainResult", "TrainingStopped",
           "CheckpointWarning", "CheckpointError", "NearChanceWarning", "DivergenceWarning",
           "PlotWarning", "device_info"]


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
      restored: on resume, the :class:`~fbackprop.training.checkpoints.Restored` account: the
        epoch resumed from (``None``: from scratch) and the checkpoints skipped, with the reason
        for each; ``None`` for a new run.
    """

    params: Any
    history: list
    config: TrainConfig
    net: Network
    data: datasets.Dataset
    out: Any
    devices: int
    device: dict | None = None
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


class NearChanceWarning(RuntimeWarning):
    """A classifier ended near chance accuracy: it did not learn."""


class DivergenceWarning(RuntimeWarning):
    """A run ended with a training loss above its first epoch's: it diverged (the learning rate
    is likely too large)."""


class PlotWarning(UserWarning):
    """``plot.png`` could not be written; the run's metrics and checkpoints are saved."""


class TrainingStopped(RuntimeError):
    """Training stopped before its last epoch.

    Raised by :func:`train` when a loss, gradient or parameter became non-finite, or (``grad=
    "checked"``) the hand-written gradient diverged from ``jax.grad``. From the failing step on
    the parameters were frozen, so nothing after it was applied.

    Attributes:
      epoch: the 1-based epoch that stopped.
      step: the 0-based step within that epoch.
      history: the completed epochs' metrics (one dict each).
      last_checkpoint: the epoch of the last good checkpoint (``None`` without ``out``).
      report: the gradient checker's :class:`~fbackprop.GradientReport` at the diverging batch,
        in float64, naming the layer whose rule is wrong (``None`` when a non-finite value
        stopped training).
    """

    def __init__(self, message, *, epoch, step, history, last_checkpoint, report=None):
        super().__init__(message)
        self.epoch, self.step, self.history = epoch, step, history
        self.last_checkpoint, self.report = last_checkpoint, report


# orbax's asynchronous checkpointing: a save returns once the arrays are on the host.
ASYNC_CHECKPOINTS = True


def train(model=None, data=None, *, mode=None, optimizer=None, lr=None, epochs=None,
          batch_size=None, grad=None, seed=None, hidden=None, check_every=None,
          checkpoint_every=None, features_per_step=None, weight_decay=None, precision=None,
          out=None, resume=False, force=False, devices=None, distributed=None, shard_params=None,
          progress=False, recompute=None) -> TrainResult:
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
        vocabulary is saved as ``vocab.json`` in ``out``), or a :class:`fbackprop.data.Dataset`.
      mode, optimizer, lr, epochs, batch_size, grad, seed, hidden, check_every,
        checkpoint_every, features_per_step, weight_decay, precision, shard_params, recompute:
        the settings of the run, each described under :class:`TrainConfig`
        (``precision="bf16"`` or ``"fp16"``: mixed precision with float32 master weights;
        ``shard_params=True``: parameters and optimizer state split over the devices, returned
        as sharded ``jax.Array`` leaves; ``recompute=True``: the backward recomputes instead of
        keeping, for less memory); ``None`` means the data set's default (or the global one), or
        on ``resume`` the saved value.
      out: a directory for config, metrics, plot and checkpoints; ``None`` writes nothing.
      resume: continue the run in ``out`` from its newest verified checkpoint (or from scratch
        with its saved settings when it has none); ``lr``, ``epochs``, ``checkpoint_every``,
        ``shard_params`` and ``recompute`` may change on resume (recorded in the ``"history"`` of
        ``config.json``).
      force: replace the run saved in ``out`` (its config, metrics, plot and checkpoints).
      devices: the devices to split batches across (default: all local ones, when the batch
        size divides evenly).
      distributed: join a multi-process run first (:func:`.distributed.initialize`): a
        :class:`~.distributed.Distributed`, a dict of its fields, or ``"auto"``. Each batch is
        then split across every device of every process; process 0 alone writes ``out``.
      progress: show a progress bar.

    Returns:
      A :class:`TrainResult`.

    Raises:
      TrainingStopped: a loss, gradient or parameter became non-finite, or a checked gradient
        diverged.
      ValueError: a bad setting, a run directory that already holds a run (without ``force``),
        one in use by another process, a resume whose settings differ from the saved ones or
        that has no epoch left to train; nothing is written in these cases.
      TypeError: ``model`` is neither a name nor a network.
      FileNotFoundError: ``data="text:PATH"`` names no file.
      DistributedError: another process of a multi-process run died or became unreachable.
    """
    options = dict(mode=mode, optimizer=optimizer, lr=lr, epochs=epochs, batch_size=batch_size,
                   grad=grad, seed=seed, hidden=hidden, check_every=check_every,
                   checkpoint_every=checkpoint_every, features_per_step=features_per_step,
                   weight_decay=weight_decay, precision=precision, out=out, resume=resume,
                   force=force, devices=devices, distributed=distributed,
                   shard_params=shard_params, progress=progress, recompute=recompute)
    return train_prepared(prepare(model, data, options))


class Built(NamedTuple):
    """What :func:`build_state` builds: everything on the device before the first epoch.

    Attributes:
      setup: the :class:`~.epoch.EpochSetup` the epoch is compiled for.
      epoch: the compiled epoch (:func:`~.epoch.compiled_epoch`).
      feed: the :class:`~.batches.Feed` of each epoch's data.
      state: the initial ``{"params", "opt_state", "key", "epoch"}``, placed.
      devices: how many devices each batch is split across.
      device: :func:`device_info` of the run.
    """

    setup: EpochSetup
    epoch: Any
    feed: Feed
    state: dict
    devices: int
    device: dict


class Prepared(NamedTuple):
    """A run checked and built, not yet started (:func:`prepare`): nothing created or written.

    Attributes:
      settings: the :class:`~.config.Settings`.
      built: the :class:`Built` state.
    """

    settings: Settings
    built: Built

    def writing_to(self, out) -> Prepared:
        """The same run, written to the directory ``out`` instead (the command line claims its
        default run directory only once the settings are checked).

        Args:
          out: the run directory.

        Returns:
          A :class:`Prepared`.
        """
        return self._replace(settings=dataclasses.replace(self.settings,
                                                          out=rundir.check_out(out)))


def prepare(model, data, options: dict) -> Prepared:
    """Steps 1 and 2 of a run: every check, and the state on the device; nothing is created or
    written, so a caller may report the run before it starts (:func:`train_prepared`).

    Args:
      model: as for :func:`train`.
      data: as for :func:`train`.
      options: the other keyword arguments of :func:`train`, ``None`` (or absent) where not
        given.

    Returns:
      A :class:`Prepared`.

    Raises:
      The errors :func:`train` raises before training starts.
    """
    settings = settle(model, data, options)
    with multiprocess.reporting_lost_peers(settings.out):
        return Prepared(settings, build_state(settings))


def train_prepared(prepared: Prepared) -> TrainResult:
    """Steps 3 and 4 of a run: open (or resume) the run directory and run the epochs.

    Args:
      prepared: from :func:`prepare`.

    Returns:
      A :class:`TrainResult`.

    Raises:
      The errors :func:`train` raises once training starts.
    """
    s, b = prepared
    with multiprocess.reporting_lost_peers(s.out, keep=(TrainingStopped, CheckpointError)):
        if s.out is None:
            restored = None
            params, history = run_epochs(s, b, Opened(0, b.state, [], None), None)
        else:
            with multiprocess.lock(s.out):  # process 0 alone writes the run directory
                opened = open_run(s, b)
                restored = opened.restored
                if restored is not None and (restored.skipped or restored.epoch is None):
                    warnings.warn(f"{s.out}: {restored.message()}", CheckpointWarning,
                                  stacklevel=3)
                checkpoints = Checkpoints(s.out, asynchronous=ASYNC_CHECKPOINTS,
                                          stamp=_stamp(s),
                                          last_epoch=None if restored is None else restored.epoch)
                try:
                    if s.config.checkpoint_every is not None and (
                            restored is None or restored.epoch is None):  # epoch 0 not saved yet
                        # (by default it is not: a run with no checkpoint resumes from scratch)
                        checkpoints.save(0, opened.state)
                    params, history = run_epochs(s, b, opened, checkpoints)
                finally:
                    checkpoints.close()
    _warn_if_near_chance(history, s.data, s.config)
    _warn_if_diverged(history, s.data, s.config)
    return TrainResult(params, history, s.config, s.net, s.data, s.out, b.devices,
                       b.device, restored)


def settle(model, data, options: dict) -> Settings:
    """Step 1: check every argument and resolve the settings; nothing is created or written.

    A resumed run's ``config.json`` and ``vocab.json`` are read here, once each.

    Args:
      model: as for :func:`train`.
      data: as for :func:`train`.
      options: the other keyword arguments of :func:`train`.

    Returns:
      The :class:`~.config.Settings`.

    Raises:
      ValueError, TypeError, FileNotFoundError: as :func:`train` documents.
    """
    o = dict(options)
    out, resume, force = o.pop("out", None), o.pop("resume", False), o.pop("force", False)
    devices, progress = o.pop("devices", None), o.pop("progress", False)
    for flag, value in (("resume", resume), ("force", force), ("progress", progress)):
        require_bool(value, flag, fix="A flag must be a bool: a string such as 'no' is truthy "
                                      "(force='no' would delete the run).")
    devices = _devices(devices)
    if multiprocess.initialize(o.pop("distributed", None)) and devices is not None:
        raise ValueError("devices: a multi-process run splits each batch across every device of "
                         "every process; received an explicit device list. Leave devices out.")
    if resume and out is None:
        raise ValueError("resume=True (--resume) needs out (--out DIR): the directory of the run "
                         "to continue.")
    if resume and force:
        raise ValueError("resume=True (--resume) and force=True (--force) contradict each other: "
                         "resume continues the run in out, force replaces it. Pass one of them.")
    out = rundir.check_out(out) if out is not None else None
    if out is not None:
        rundir.check_layout(out, resume=resume)
    saved = rundir.read_config(out) if resume else None
    if saved is not None:  # a run saved before these settings existed
        saved = {"precision": "fp32", "recompute": False, **saved}
    vocab = rundir.read_vocab(out) if resume else None
    if saved is not None:
        model = saved.get("model") if model is None and saved.get("model") in MODELS else model
        data = saved.get("data") if data is None and _loadable(saved.get("data")) else data
    ds = _load_data("digits" if data is None else data, vocab)
    if resume:
        rundir.check_vocab(vocab, ds, out)
    net, name = _network("mlp" if model is None else model)
    config = resolve(o, saved, ds, name, net is not None)
    multiprocess.require_same({**config.as_dict(), "resume": resume, "force": force,
                               "out": None if out is None else str(out)})
    if net is None:
        net = build_model(name, ds, config.hidden, config.features_per_step)
    return Settings(config, ds, net, out, resume, force, saved,
                    None if devices is None else tuple(devices), progress)


def _devices(devices):
    """``devices`` as a list of ``jax.Device`` (``None`` passes): ``TypeError`` otherwise."""
    if devices is None:
        return None
    listed = (list(devices) if hasattr(devices, "__iter__")
              and not isinstance(devices, (str, bytes)) else [])
    if not listed or not all(isinstance(d, jax.Device) for d in listed):
        raise TypeError(f"devices must be a non-empty list of jax devices, e.g. "
                        f"jax.devices()[:2], received {devices!r}. Leave it out to use every "
                        f"local device.")
    return listed


def _network(model):
    """``(network, name)`` for a ready-made network, ``(None, name)`` for a registry family."""
    if isinstance(model, Network):
        return model, model.name
    if isinstance(model, str):
        require_choice(model, MODELS, "model")
        return None, model
    raise TypeError(f"model must be a name such as 'mlp' or an fbackprop.Network, received "
                    f"{type(model).__name__}.")


def _load_data(data, vocab):
    """The data set ``data``; on resume (``vocab`` saved) a corpus ``"text:PATH"`` is cut into
    windows of the length the run was trained with."""
    if vocab is not None and isinstance(data, str) and data.startswith("text:"):
        return datasets.text(data[len("text:"):], vocab["seq_len"])
    return datasets.load(data)


def _loadable(name) -> bool:
    """Whether a saved run's data name can be loaded again by name."""
    return isinstance(name, str) and (name in datasets.DATASETS
                                      or name in datasets.SEQUENCE_DATASETS
                                      or name.startswith("text:"))


def build_state(s: Settings) -> Built:
    """Step 2: place the data, initialise parameters and optimizer state, trace the epoch.

    Args:
      s: the :class:`~.config.Settings`.

    Returns:
      The :class:`Built` state.

    Raises:
      ValueError: a batch that cannot be split across the devices of several processes, or an
        error the network raises while the epoch is traced.
    """
    config, ds, net = s.config, s.data, s.net
    n_dev, batch_sharding, replicated, put = placement(s.devices, config.batch_size)
    sharded = _param_sharding(s, n_dev, batch_sharding)
    device = device_info(jax.local_devices() if s.devices is None else s.devices, n_dev)
    x_dtype = input_dtype(ds)
    host = {"x_train": shape_inputs(ds.x_train, net.input_shape).astype(x_dtype),
            "y_train": targets(ds, ds.y_train),
            "x_test": shape_inputs(ds.x_test, net.input_shape).astype(x_dtype),
            "y_test": targets(ds, ds.y_test)}
    feed = Feed({k: np.asarray(v) for k, v in host.items()}, config.batch_size, put,
                batch_sharding)
    setup = EpochSetup(net, get_cost(COST_FOR_TASK[ds.task]), config.optimizer, config.lr,
                       config.weight_decay, len(ds.x_train), config.batch_size, config.grad,
                       config.check_every,
                       # low precision: the error budget's ratio, ≤ 1 passes
                       1.0 if get_policy(config.precision).low else TOLERANCE["float32"],
                       ds.task, ds.n_classes if ds.task == "sequence" else 0, config.precision,
                       config.recompute)
    init_key, key = jax.random.split(jax.random.PRNGKey(config.seed))
    params = net.init(init_key)
    state = {"params": params, "opt_state": setup.make_optimizer().init(params)}
    state = jax.tree.map(put, state) if sharded is None else sharded.place(state)
    state.update(key=put(key), epoch=put(jnp.zeros((), jnp.int32)))
    epoch = compiled_epoch(setup, (batch_sharding, replicated, sharded))
    # Trace one epoch (shapes only) so that a network failing at trace time fails here, before
    # the run directory is touched.
    jax.eval_shape(epoch, state["params"], state["opt_state"], state["key"],
                   jnp.zeros((), jnp.int32), feed(state["key"]))
    return Built(setup, epoch, feed, state, n_dev, device)


def _param_sharding(s: Settings, n_dev: int, batch_sharding):
    """The :class:`.sharding.ParamSharding` of a ``shard_params`` run over the devices that
    split the batch (``None`` without ``shard_params``, or with one device in all)."""
    if not s.config.shard_params:
        return None
    if batch_sharding is None:
        available = len(jax.local_devices() if s.devices is None else s.devices)
        if available > 1:  # placement() fell back to one device: the batch does not split
            b = s.config.batch_size
            raise ValueError(f"shard_params splits the parameters over the devices that split "
                             f"each batch; received batch_size {b}, not a multiple of the "
                             f"{available} devices. Use --batch-size "
                             f"{max(available, b // available * available)} or another "
                             f"multiple of {available}.")
        return None  # one device: nothing to split
    return ParamSharding(batch_sharding.mesh)


class Opened(NamedTuple):
    """Where the epochs start (:func:`open_run`).

    Attributes:
      start: the last epoch already trained (0 for a new run).
      state: the state to continue from.
      history: the metrics rows of epochs 1 … ``start``.
      restored: on resume, the :class:`~.checkpoints.Restored` account, else ``None``.
    """

    start: int
    state: dict
    history: list
    restored: Any


def open_run(s: Settings, b: Built) -> Opened:
    """Step 3: create the run directory, or resume it from its newest verified checkpoint.

    The caller holds the directory's lock (:func:`.distributed.lock`); process 0 alone writes.

    Args:
      s: the :class:`~.config.Settings` (``s.out`` is not ``None``).
      b: the :class:`Built` state (the shapes a checkpoint is restored into).

    Returns:
      The :class:`Opened` start.

    Raises:
      ValueError: ``s.out`` holds a run (without ``force``), a resume's settings differ from
        the saved ones, it is already at its last epoch, or its metrics are damaged.
    """
    record = {**s.config.as_dict(), "device": b.device}
    if not s.resume:
        def create():
            rundir.create(s.out, record, force=s.force)
            rundir.write_vocab(s.out, s.data)

        multiprocess.on_primary(create, "create the run directory")
        return Opened(0, b.state, [], None)
    rundir.check_resume_settings(s.out, record, s.saved)  # a changed setting, named first
    restored = restore_latest(s.out, b.state, agree=multiprocess.agree,
                              stamp=_stamp(s, s.saved))
    start, state, history = 0, b.state, []
    if restored.epoch is not None:
        start, state = restored.epoch, restored.state
        history = metrics.read_metrics(s.out, upto_epoch=start)

    def resume():
        rundir.open_for_resume(s.out, record, s.saved, start=start)
        moved = move_aside(s.out, [e for e, _ in restored.skipped])
        metrics.rewrite_metrics(s.out, history)
        return moved

    restored.quarantined = multiprocess.on_primary(resume, "resume the run") or []
    return Opened(start, state, history, restored)


def _stamp(s: Settings, config=None) -> dict:
    """The :func:`~.checkpoints.run_stamp` of a run: recorded with each checkpoint; on resume,
    that of the saved ``config.json`` (``config``) is what the checkpoints are compared with, so
    that a setting given on the command line is refused by :func:`.rundir.open_for_resume`,
    not reported as an edited file."""
    vocab = (None if s.data.vocab is None else
             {"vocab": s.data.vocab, "seq_len": int(s.data.x_train.shape[1])})
    return run_stamp(s.config.as_dict() if config is None else config, vocab)


def run_epochs(s: Settings, b: Built, opened: Opened, checkpoints):
    """Step 4: run epochs ``opened.start + 1 … epochs``; save metrics and checkpoints.

    Args:
      s: the :class:`~.config.Settings`.
      b: the :class:`Built` state.
      opened: where to start; its ``history`` is extended in place, epoch by epoch (a stopped
        run's history holds the epochs completed).
      checkpoints: the run's :class:`~.checkpoints.Checkpoints` (``None`` without ``out``).

    Returns:
      ``(params, history)``: the final parameters and one metrics row per epoch.

    Raises:
      TrainingStopped: an epoch stopped (a non-finite value or a diverging checked gradient).
    """
    from tqdm import tqdm

    config, history = s.config, opened.history
    params, opt_state, key = (opened.state[k] for k in ("params", "opt_state", "key"))
    submitted = None  # the plot handed to the plot process
    if checkpoints is not None:
        checkpoints.prefetch()
    saved_at = time.monotonic()
    writes = s.out is not None and multiprocess.is_primary()  # metrics and plot: process 0
    bar = tqdm(total=config.epochs, initial=opened.start, unit="epoch",
               disable=not s.progress or not multiprocess.is_primary(),
               desc=f"{config.model} on {config.data}", dynamic_ncols=True)
    try:
        for epoch in range(opened.start + 1, config.epochs + 1):
            t0 = time.perf_counter()
            key, epoch_key = jax.random.split(key)
            params, opt_state, values, status = b.epoch(
                params, opt_state, epoch_key, jnp.asarray(epoch - 1, jnp.int32),
                b.feed(epoch_key))
            values, status = jax.device_get((values, status))
            if status["stopped"]:
                raise _stopped(s, b, (epoch, epoch_key), status, params, history,
                               None if checkpoints is None else checkpoints.last_epoch)
            row = _row(epoch, values, s.data.task, time.perf_counter() - t0, b.device)
            history.append(row)
            if writes:
                metrics.append_metrics(s.out, row)
                if epoch == config.epochs:  # drawn while the last checkpoint is written
                    submitted = metrics.submit_plot(s.out, history, _plot_title(s))
            if checkpoints is not None and checkpoint_due(
                    config.checkpoint_every, config.epochs, epoch, time.monotonic() - saved_at,
                    jax.process_count()):
                _save(checkpoints, epoch, params, opt_state, key)
                saved_at = time.monotonic()
            bar.set_postfix(_postfix(row), refresh=False)
            bar.update(1)
    finally:
        bar.close()
        if writes and history:
            _plot(s, history, submitted)
    return params, history


def _save(checkpoints, epoch: int, params, opt_state, key):
    """Save the state after ``epoch``; the epoch is placed like the key: replicated."""
    checkpoints.save(epoch, {"params": params, "opt_state": opt_state, "key": key,
                             "epoch": jax.device_put(np.int32(epoch), key.sharding)})


def _plot_title(s: Settings) -> str:
    """The title of a run's plot."""
    c = s.config
    data = (f"text:{pathlib.Path(c.data[5:]).name}"  # no machine path in figures
            if c.data.startswith("text:") else c.data)
    return f"{c.model} on {data}, {c.mode}, {c.optimizer} η={c.lr:g}, {c.grad} gradients"


def _plot(s: Settings, history, submitted=None):
    """Write ``plot.png`` (or wait for the ``submitted`` drawing); a failure is a
    :class:`PlotWarning`, never the loss of the run."""
    try:
        metrics.plot_run(s.out, history, _plot_title(s), submitted)
    except (OSError, ValueError) as err:
        warnings.warn(f"{s.out / rundir.PLOT} could not be written ({type(err).__name__}: "
                      f"{err}); the metrics and checkpoints are saved. Plot them again from "
                      f"{s.out / rundir.METRICS}.", PlotWarning, stacklevel=2)


def _row(epoch, values, task, seconds, device) -> dict:
    """One epoch's metrics row, as ``metrics.jsonl`` and the history hold it."""
    return {"epoch": epoch, **{k: _number(v, task, k) for k, v in values.items()},
            "seconds": round(seconds, 4),
            "device": f"{device['platform']}:{device['name']}×{device['count']}"}


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

    train_key, test_key, _, unit = metrics.loss_unit(row)
    post = {unit: fmt(row.get(train_key))}
    if row.get("test_accuracy") is not None:
        post.update(train=fmt(row["train_accuracy"], 3), test=fmt(row["test_accuracy"], 3))
    else:
        post[f"test {unit}"] = fmt(row.get(test_key))
    return post


def _stopped(s: Settings, b: Built, at, status, params, history, last_saved) -> TrainingStopped:
    """The error for a stopped epoch ``at = (epoch, epoch_key)``: which values went non-finite,
    or which layers' gradients differ from jax.grad (located by the gradient checker)."""
    (epoch, epoch_key), step = at, int(status["step"])
    where, report = f"epoch {epoch}, step {step}", None
    if not np.all(status["finite"]):
        names = [n for n, ok in zip(leaf_names(params), status["finite"]) if not ok]
        lower = f"{s.config.lr / 10:g}"
        again = (f"fbackprop train --out {s.out} --resume --lr {lower} (fb.train(out=..., "
                 f"resume=True, lr={lower}))" if s.out is not None else
                 f"train again with --lr {lower} (fb.train(..., lr={lower}))")
        msg = (f"training stopped at {where}: non-finite values in {', '.join(names)}. "
               f"The learning rate ({s.config.optimizer}, lr={s.config.lr:g}) may be too large; "
               f"lower --lr: {again}.")
    else:
        # Locate the wrong rule with the gradient checker, in float64, at the very batch that
        # diverged: each layer's rules are compared with jax.vjp at the autodiff delta, so the
        # failing layer is the one whose own rule is wrong, not merely the lowest affected one.
        x, y = batch_at(step, epoch_key, b.feed.host, b.setup.batch_size)
        whole = jax.tree.map(host_value, params)  # split across processes: all gather
        report = check(b.setup.net, b.setup.cost, whole, x, encode_targets(b.setup, y),
                       dtype="float64")
        located = (f"The gradient checker locates it: {report.failure_message()}"
                   if not report.ok else
                   "In float64 the checker finds every layer's rules correct at this batch, so "
                   "the divergence is float32 rounding: raise the check tolerance.")
        error = (f"its error exceeds the error budget, {BUDGET:g} × jax.grad's error in "
                 f"{s.config.precision} + {BUDGET_FLOOR:g} (ratio {float(status['error']):.2f} > "
                 f"1)" if get_policy(s.config.precision).low else
                 f"relative error {float(status['error']):.2e} > {b.setup.tolerance:g}")
        msg = (f"training stopped at {where}: the hand-written gradient differs from jax.grad "
               f"({error}). {located}")
    if last_saved is not None:
        msg += (f" The last good checkpoint (epoch {last_saved}) is in "
                f"{s.out / rundir.CHECKPOINTS}.")
    elif s.out is not None:
        msg += (" No checkpoint was saved before it (by default a run saves at most one per "
                f"{CHECKPOINT_SECONDS:g} s), so the resume starts from the initial parameters.")
    return TrainingStopped(msg, epoch=epoch, step=step, history=history,
                           last_checkpoint=last_saved, report=report)


def _warn_if_diverged(history, ds, config):
    """Warn when the final training loss exceeds the first epoch's, or the loss of a network that
    learned nothing (every class equally likely: ln K; regression: the mean target), although
    every value stayed finite: a learning rate too large for the optimizer."""
    if not history or history[-1].get("loss") is None:
        return
    last, first = history[-1]["loss"], history[0].get("loss")
    if ds.task == "regression":
        y = np.asarray(ds.y_train, np.float64).reshape(len(ds.y_train), -1)
        floor, what = 0.5 * float(np.mean(np.sum((y - y.mean(0)) ** 2, 1))), "the mean target"
    else:
        k = ds.n_classes if ds.task in ("classification", "sequence") else 2
        floor, what = math.log(k), f"every one of {k} classes equally likely"
    if ds.task == "sequence":
        floor *= float(np.sum(np.asarray(ds.y_train) >= 0)) / len(ds.y_train)  # summed over
        # the scored positions of each example (id −1: unscored)
    above = ([f"the first epoch's {first:.4g}"] if len(history) > 1 and first is not None
             and last > first else []) + ([f"{floor:.4g}, the loss of predicting {what}"]
                                          if last > 1.1 * floor else [])
    if above:
        warnings.warn(
            f"{config.model} on {config.data} diverged: the final training loss {last:.4g} "
            f"(epoch {history[-1]['epoch']}) is above {' and '.join(above)}. The learning rate "
            f"({config.optimizer}, lr={config.lr:g}) is likely too large: train again with a "
            f"smaller --lr, e.g. {config.lr / 10:g}.", DivergenceWarning, stacklevel=4)


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
            NearChanceWarning, stacklevel=4)
