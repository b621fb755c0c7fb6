"""``fbackprop train``: train a network with the hand-written gradients and save the run."""
from __future__ import annotations

import logging
import os
import pathlib
import sys
import time

from .. import plotting
from ..data import DATASETS, SEQUENCE_DATASETS
from ..training import GRADS, MODES, OPTIMIZERS, PRECISIONS
from ..training.config import CHECKPOINT_SECONDS
from ..training.registry import MODELS
from . import SUMMARIES, any_case, plural, supervisor


def _widths(text: str):
    """``"64,32"`` → (64, 32); ``""`` or ``"none"`` → () (no hidden layer)."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(int(w) for w in text.split(","))
    except ValueError:
        import argparse

        raise argparse.ArgumentTypeError(f"expected comma-separated widths such as 64,32 (or "
                                         f"'none'), received {text!r}") from None


_DATA_NAMES = (*DATASETS, *SEQUENCE_DATASETS)


def _data(text: str) -> str:
    """A data set name in any case, or ``text:PATH`` as given; ``fbackprop.train`` refuses an
    unknown name (with the list of names) or a missing file."""
    return text if text.startswith("text:") else any_case(_DATA_NAMES)(text)


def add_parser(subparsers):
    """Add ``fbackprop train`` and its options to ``subparsers`` (an argparse sub-parser set)."""
    p = subparsers.add_parser(
        "train", help=SUMMARIES["train"],
        description="Train a network with the hand-written backward rules (or jax.grad, or both "
                    "compared) and save config, metrics, a plot and checkpoints. With no "
                    "arguments: an MLP on scikit-learn's digits, ≥ 95% test accuracy in "
                    "seconds. Unset options take the data set's defaults, or with --resume the "
                    "saved run's values.")
    _add_settings(p)
    _add_output(p)
    _add_cluster(p)
    p.set_defaults(func=run)


def _add_settings(p):
    """The options that settle what is trained and how."""
    p.add_argument("--model", choices=MODELS, type=any_case(MODELS),
                   help="network family (default mlp)")
    p.add_argument("--data", type=_data, metavar="{" + ",".join(_DATA_NAMES) + ",text:PATH}",
                   help="data set (default digits); modadd ((a + b) mod 97 as tokens) and "
                        "text:PATH (a character-level corpus) are token sequences for --model "
                        "transformer")
    p.add_argument("--mode", choices=MODES, type=any_case(MODES),
                   help="Gordon's learning mode: online (batch 1), offline (whole training set "
                        "per update) or minibatch (default)")
    p.add_argument("--optimizer", choices=tuple(OPTIMIZERS), type=any_case(tuple(OPTIMIZERS)),
                   help="gd (Δp = −η∇, by hand), or optax's sgd, momentum, adam (default), "
                        "adamw (Adam with decoupled weight decay; default for token sequences)")
    p.add_argument("--weight-decay", type=float,
                   help="adamw's decoupled weight decay λ (default: 1.0 on modadd, 0.01 on "
                        "text, else 1e-4)")
    p.add_argument("--lr", type=float, help="learning rate η (default depends on --optimizer)")
    p.add_argument("--epochs", type=int, help="passes over the training set")
    p.add_argument("--batch-size", type=int, help="minibatch size (minibatch mode)")
    p.add_argument("--grad", choices=GRADS, type=any_case(GRADS),
                   help="gradient source: manual (default), autodiff (jax.grad), or checked "
                        "(manual, compared with jax.grad every --check-every steps)")
    p.add_argument("--check-every", type=int, help="steps between checks with --grad checked")
    p.add_argument("--precision", choices=tuple(PRECISIONS), type=any_case(tuple(PRECISIONS)),
                   help="fp32 (default), or mixed precision: bf16 or fp16 forward and "
                        "hand-written backward with float32 master weights (fp16 with dynamic "
                        "loss scaling); --grad checked then compares with jax.grad in the same "
                        "precision under the error budget")
    p.add_argument("--recompute", action="store_true", default=None,
                   help="the hand-written backward recomputes what its rules derive from each "
                        "layer's input (attention probabilities, pre-activations) instead of "
                        "keeping the forward's copy: less memory for a transformer, the same "
                        "values (docs/PERFORMANCE.md)")
    p.add_argument("--hidden", type=_widths,
                   help="hidden widths, e.g. 64,32 ('none' for no hidden layer); the state size "
                        "for rnn/lstm/gru; for transformer one width per block, all equal "
                        "(default: 128 on modadd, 128,128 on text)")
    p.add_argument("--seed", type=int, help="seed of initialisation and shuffling (default 0)")
    p.add_argument("--features-per-step", type=int,
                   help="rnn/lstm/gru on 1-D signals: samples per time step (default: the data "
                        "set's, 8 for mnist1d: 5 steps of 8)")
    p.add_argument("--shard-params", action="store_true", default=None,
                   help="split each parameter and its optimizer state over the devices that "
                        "split the batch (FSDP-style; leaves under 1024 elements stay "
                        "replicated; see docs/DISTRIBUTED.md)")


def _add_output(p):
    """The options of the run directory and of what the command prints."""
    p.add_argument("--checkpoint-every", type=int,
                   help="epochs between checkpoints, and a checkpoint of epoch 0 (default: "
                        f"every epochs // 20 epochs but at most one per {CHECKPOINT_SECONDS:g} "
                        "seconds; always the last epoch)")
    p.add_argument("--out",
                   help="run directory (default runs/<date>-<time>); refuses one that holds a run")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest verified checkpoint; --lr, "
                        "--epochs, --checkpoint-every, --shard-params and --recompute may change")
    p.add_argument("--force", action="store_true",
                   help="replace the run saved in --out (its config, metrics, plot and "
                        "checkpoints are deleted)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--verbose", action="store_true",
                   help="keep the log messages of third-party libraries (absl, orbax)")


def _add_cluster(p):
    """The options of a run over several processes (hosts)."""
    g = p.add_argument_group(
        "several processes (hosts)",
        "Start one process per host with the same --coordinator, --num-processes and --out and "
        "its own --process-id; each batch is split across every device of every process. --out "
        "must be on a file system they share. See docs/DISTRIBUTED.md.")
    g.add_argument("--coordinator", metavar="HOST:PORT",
                   help="address of process 0, where the processes meet")
    g.add_argument("--num-processes", type=int, metavar="N", help="how many processes take part")
    g.add_argument("--process-id", type=int, metavar="I", help="this process, 0 … N−1")
    g.add_argument("--distributed", choices=("auto",),
                   help="auto: let JAX read the cluster from SLURM, Open MPI or Cloud TPU")
    g.add_argument("--heartbeat-timeout", type=int, default=30, metavar="SECONDS",
                   help="with --coordinator: a process silent this long counts as dead and "
                        "stops the others (default 30)")
    g.add_argument("--connect-timeout", type=int, default=60, metavar="SECONDS",
                   help="with --coordinator: how long a process waits for all the others to "
                        "start and join; then it stops (default 60)")


_CLUSTER_FLAGS = ("coordinator", "num_processes", "process_id")


def _distributed(args):
    """The ``distributed=`` argument of ``train`` from the command line.

    Returns:
      ``None`` (one process), ``"auto"``, or a ``Distributed``.

    Raises:
      ValueError: the flags are given partly, or together with --distributed auto.
    """
    from ..training.distributed import Distributed, check_spec

    flag = {f: "--" + f.replace("_", "-") for f in _CLUSTER_FLAGS}
    given = [f for f in _CLUSTER_FLAGS if getattr(args, f) is not None]
    if args.distributed == "auto":
        if given:
            raise ValueError("--distributed auto reads the cluster from the environment; "
                             "received also " + ", ".join(flag[f] for f in given)
                             + ". Pass one or the other.")
        return "auto"
    if not given:
        return None
    if len(given) < len(_CLUSTER_FLAGS):
        missing = [flag[f] for f in _CLUSTER_FLAGS if f not in given]
        raise ValueError("a multi-process run needs --coordinator, --num-processes and "
                         "--process-id together; missing " + ", ".join(missing) + ".")
    return check_spec(Distributed(args.coordinator, args.num_processes, args.process_id,
                                  heartbeat_timeout=args.heartbeat_timeout,
                                  initialization_timeout=args.connect_timeout))


def _quiet_third_party_logs():
    """Silence absl's and orbax's chatter (checkpoint saves, async managers), and orbax's
    error logs too: a save that fails in orbax's background thread logs its traceback there,
    and the trainer reports the same failure as one line (``--verbose`` shows them)."""
    for name in ("absl", "orbax", "orbax.checkpoint"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    logging.getLogger("jax._src.distributed").setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging
    except ImportError:  # absl comes with orbax; without it there is nothing to silence
        return
    absl_logging.set_verbosity(absl_logging.FATAL)


def _default_out() -> pathlib.Path:
    """A new directory ``runs/<date>-<time>[-i]``, claimed by creating it (``mkdir`` fails if
    another process took the name first, even within the same second)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    pathlib.Path("runs").mkdir(exist_ok=True)
    out, i = pathlib.Path("runs") / stamp, 1
    while True:
        try:
            out.mkdir()
            return out
        except FileExistsError:
            i += 1
            out = pathlib.Path("runs") / f"{stamp}-{i}"


def _options(args, distributed) -> dict:
    """The keyword arguments of ``fbackprop.train`` that the command line gives."""
    names = ("mode", "optimizer", "lr", "epochs", "batch_size", "grad", "seed", "hidden",
             "check_every", "checkpoint_every", "features_per_step", "weight_decay", "precision",
             "out", "resume", "force", "shard_params", "recompute")
    return {**{n: getattr(args, n) for n in names}, "distributed": distributed,
            "progress": not args.no_progress}


def _fail(err) -> int:
    """Print a user error on one line; the exit status 2."""
    print(f"fbackprop train: error: {err}", file=sys.stderr, flush=True)
    return 2


def run(args) -> int:
    """Train from the command line: check everything, report the run, train, report the result.

    Args:
      args: the parsed arguments of ``fbackprop train``.

    Returns:
      The exit status: 0 trained, 1 training stopped, 2 bad input (in a multi-process run,
      also settings that differ between the processes), 3 another process of a multi-process
      run was lost or never joined (a multi-process run is supervised:
      :mod:`.supervisor`), 130 interrupted.
    """
    if not args.verbose:
        _quiet_third_party_logs()
    if args.distributed is not None or any(getattr(args, f) is not None
                                           for f in _CLUSTER_FLAGS):
        plotting.close_process()  # the plot process the command started: for one process
    prepared = _prepared(args)
    if isinstance(prepared, int):  # refused, or handed to the supervisor
        return prepared
    out = prepared.settings.out
    _print_start(out, args.resume)
    return _train(prepared, out)


def _prepared(args):
    """Every check first, so that nothing is created or printed before they pass: the prepared
    run, or the exit status of a refusal (or of a supervised multi-process run)."""
    from ..training import prepare

    try:
        distributed = _distributed(args)
        if distributed is not None and args.out is None:
            raise ValueError("a multi-process run needs --out DIR, the same directory for "
                             "every process on a file system they share.")
        if distributed is not None and supervisor.WORKER not in os.environ:
            # JAX aborts a process that loses its peers: watch the training from outside
            return supervisor.supervise(args.argv, distributed, args.out, args.verbose)
        if distributed is not None:
            supervisor.start_worker(distributed)
        prepared = prepare(args.model, args.data, _options(args, distributed))
        if args.out is None:
            prepared = prepared.writing_to(_default_out())
    except (ValueError, TypeError, FileNotFoundError) as err:
        return _fail(err)
    return prepared


def _train(prepared, out) -> int:
    """Train the prepared run; each way it can end becomes its exit status and one message."""
    import warnings

    from ..training import CheckpointError, TrainingStopped, train_prepared
    from ..training.distributed import DistributedError, is_primary

    try:
        with warnings.catch_warnings(record=True) as caught:
            result = train_prepared(prepared)
    except DistributedError as err:
        _fail(err)
        sys.stdout.flush()
        # JAX's exit handler would wait for the dead process at its shutdown barrier and then
        # abort; the error is reported, so leave now.
        os._exit(3)
    except KeyboardInterrupt:
        print(f"\nfbackprop train: interrupted. Checkpoints up to the last saved epoch are in "
              f"{out}; continue with:\n  fbackprop train --out {out} --resume", file=sys.stderr)
        return 130
    except TrainingStopped as err:
        print(f"fbackprop train: {err}", file=sys.stderr)
        return 1
    except CheckpointError as err:
        _fail(err)
        sys.stdout.flush()
        # orbax's failed background save leaves a thread that the interpreter would wait for at
        # exit, forever; the error is reported and every finished step is on disk, so leave now.
        os._exit(2)
    except (ValueError, TypeError) as err:
        return _fail(err)
    except OSError as err:  # a run file that cannot be read or written: one line naming it
        return _fail(f"{err.filename or out}: {err.strerror or err}. Fix it (permissions, space, "
                     f"a file replaced by a directory), then resume: fbackprop train --out "
                     f"{out} --resume")
    if is_primary():  # process 0 reports the run
        _report(result, caught)
    return 0


def _print_start(out, resume: bool):
    """The first lines: the run directory and the devices."""
    import jax

    from ..training import device_info

    print(f"fbackprop train: run directory {out}{' (resuming)' if resume else ''}", flush=True)
    devices = jax.local_devices()
    d = device_info(devices, len(devices))
    print(f"device: {d['platform']} ({d['name']}) × {d['count']}"
          + (f", process {jax.process_index()} of {jax.process_count()} "
             f"({jax.device_count()} devices in all)" if jax.process_count() > 1 else ""),
          flush=True)


def _report(result, caught):
    """The result: the resume's account, the settings, the final metrics, the run's files, and
    the warnings of the run as plain lines (the near-chance one with no source line)."""
    import warnings

    import jax

    from ..training import CheckpointWarning, DivergenceWarning, NearChanceWarning, PlotWarning

    if result.restored is not None:
        print(f"fbackprop train: {result.restored.message()}", flush=True)
    c, last = result.config, result.history[-1] if result.history else None
    print(f"{c.model} on {c.data}: {c.mode}, {c.optimizer} lr={c.lr:g}"
          + (f" weight decay {c.weight_decay:g}" if c.weight_decay is not None else "")
          + f", batch {c.batch_size}, "
          f"{plural(c.epochs, 'epoch')}, {c.grad} gradients"
          + (f", {c.precision} mixed precision" if c.precision != "fp32" else "")
          + (", recomputing in the backward" if c.recompute else "")
          + (f", {plural(c.features_per_step, 'feature')} per step" if c.features_per_step else "")
          + (f", batches split across {result.devices} devices" if result.devices > 1 else "")
          + (f" of {jax.process_count()} processes" if jax.process_count() > 1 else "")
          + (", parameters and optimizer state split across them"
             if c.shard_params and result.devices > 1 else ""))
    if last is not None:
        if last["test_accuracy"] is not None:
            print(f"final test accuracy: {100 * last['test_accuracy']:.2f}% "
                  f"({len(result.data.x_test)} test examples; train "
                  f"{100 * last['train_accuracy']:.2f}%)"
                  + (f"; test loss per token {last['test_loss_per_token']:.4f}"
                     if last.get("test_loss_per_token") is not None else ""))
        else:
            print(f"final test loss: {last['test_loss']:.6f} ({len(result.data.x_test)} test "
                  f"examples)")
    vocab = ", vocab.json" if result.data.vocab is not None else ""
    print(f"saved in {result.out}: config.json{vocab}, metrics.jsonl, plot.png, checkpoints/")
    if vocab and c.data.startswith("text:"):
        print(f"sample from it: fbackprop sample --out {result.out}")
    for w in caught:
        if issubclass(w.category, (NearChanceWarning, DivergenceWarning, PlotWarning)):
            print(f"fbackprop train: warning: {w.message}", file=sys.stderr)
        elif not issubclass(w.category, CheckpointWarning):  # told above, from the result
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
