"""The run directory of a training run: its config, metrics, plot and checkpoints.

Layout of ``DIR``::

    config.json     the resolved training configuration
    metrics.jsonl   one JSON object per epoch: epoch, loss, train/test accuracy, test loss, seconds
    plot.png        loss and accuracy against epochs
    checkpoints/    orbax-checkpoint steps, one per saved epoch (0 = the initial parameters)

Checkpoints use orbax-checkpoint's ``CheckpointManager`` with synchronous saves: a save returns
once the step is complete on disk. orbax writes a step into a temporary directory and renames it
into place when it is complete, so a process killed at any moment leaves either the whole step or
none of it (half-written temporary directories are not listed, and are removed when the run is
resumed). Restoring tries the newest step first and falls back to older ones if a step cannot be
read. Small files (config, plot, rewritten metrics) are written to a temporary file, fsynced and
renamed; metrics lines are appended and fsynced one by one, and a torn last line is ignored.

Nothing here overwrites what an earlier run saved: :func:`create` refuses a directory that
already holds a run, and :func:`open_for_resume` checks everything before it writes anything.
"""
from __future__ import annotations

import json
import os
import pathlib
import tempfile

import jax

__all__ = ["CONFIG", "METRICS", "PLOT", "CHECKPOINTS", "create", "read_config", "open_for_resume",
           "append_metrics", "read_metrics", "rewrite_metrics", "write_plot", "checkpoint_manager", "save",
           "restore", "restore_latest", "saved_epochs"]

CONFIG, METRICS, PLOT, CHECKPOINTS = "config.json", "metrics.jsonl", "plot.png", "checkpoints"


def _fsync_dir(path: pathlib.Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: pathlib.Path, write):
    """Write through ``write(file_object)`` into a temporary file beside ``path``, fsync it and
    rename it over ``path``: readers see the old file or the new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; run files are readable like any other
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _write_json(path: pathlib.Path, obj):
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))


def _holds_a_run(out: pathlib.Path) -> bool:
    return (out / CONFIG).exists() or (out / CHECKPOINTS).exists() or (out / METRICS).exists()


def create(out, config: dict) -> pathlib.Path:
    """Start a new run in ``out`` (created if needed) and save ``config``. Refuses a directory
    that already holds a run, so nothing saved is ever overwritten."""
    out = pathlib.Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; pass a directory (it is created if missing).")
    if _holds_a_run(out):
        raise ValueError(f"--out {out} already holds a training run ({CONFIG}, {METRICS} or "
                         f"{CHECKPOINTS}/); pass --resume to continue it, or choose a new "
                         f"directory. Nothing was changed.")
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / CONFIG, config)
    return out


def _differences(saved: dict, config: dict, ignore) -> list:
    keys = sorted((set(saved) | set(config)) - set(ignore))
    return [f"{k}: saved {saved.get(k)!r}, now {config.get(k)!r}"
            for k in keys if saved.get(k) != config.get(k)]


def read_config(out) -> dict:
    """The config saved in run directory ``out``; ``ValueError`` if there is none."""
    out = pathlib.Path(out).absolute()
    if not (out / CONFIG).exists():
        raise ValueError(f"--resume: {out} holds no run ({CONFIG} is missing). Pass the --out "
                         f"directory of an earlier run, or drop --resume to start a new one.")
    return json.loads((out / CONFIG).read_text())


def open_for_resume(out, config: dict, *, may_differ=("epochs",)) -> pathlib.Path:
    """Check that ``out`` holds a run with a checkpoint and the same ``config`` (keys in
    ``may_differ`` excepted); only then record the new config. Raises ``ValueError`` — before
    writing anything — when the directory, its config or its checkpoints are missing, or when
    the configs differ."""
    out = pathlib.Path(out).absolute()
    saved = read_config(out)
    diff = _differences(saved, json.loads(json.dumps(config)), may_differ)
    if diff:
        raise ValueError(f"--resume: the configuration differs from the one saved in "
                         f"{out / CONFIG}:\n  " + "\n  ".join(diff) +
                         "\nResume with the saved settings (leave them out on the command line), "
                         "or start a new run in another directory. Nothing was changed.")
    epochs = saved_epochs(out)
    if not epochs:
        raise ValueError(f"--resume: {out / CHECKPOINTS} holds no complete checkpoint, so there "
                         f"is nothing to resume; start a new run in another directory.")
    if epochs[-1] > config["epochs"]:
        raise ValueError(f"--resume: the last checkpoint is at epoch {epochs[-1]}, past epochs="
                         f"{config['epochs']}; pass --epochs {epochs[-1]} or more.")
    if saved != json.loads(json.dumps(config)):
        _write_json(out / CONFIG, config)
    return out


def append_metrics(out: pathlib.Path, row: dict):
    """Append one epoch's metrics as a JSON line, flushed and fsynced."""
    with open(out / METRICS, "ab") as f:
        f.write((json.dumps(row) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())


def read_metrics(out: pathlib.Path, *, upto_epoch=None) -> list:
    """The metrics rows saved in ``out`` (epochs ≤ ``upto_epoch`` if given); a torn last line
    left by a killed process is skipped."""
    path = pathlib.Path(out) / METRICS
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if upto_epoch is None or row["epoch"] <= upto_epoch:
            rows.append(row)
    return rows


def rewrite_metrics(out: pathlib.Path, rows: list):
    """Replace the metrics file by ``rows`` (atomically)."""
    _atomic_write(out / METRICS, lambda f: f.write("".join(json.dumps(r) + "\n"
                                                           for r in rows).encode()))


def write_plot(out: pathlib.Path, history: list, title: str = ""):
    """Plot training loss, test loss and the accuracies against epochs into ``plot.png``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["loss"] for r in history], label="training loss (during the epoch)")
    ax_loss.plot(epochs, [r["test_loss"] for r in history], label="test loss")
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log")
    ax_loss.legend()
    if any(r.get("test_accuracy") is not None for r in history):
        ax_acc.plot(epochs, [r["train_accuracy"] for r in history], label="train accuracy")
        ax_acc.plot(epochs, [r["test_accuracy"] for r in history], label="test accuracy")
        ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.01))
        ax_acc.legend()
    else:
        ax_acc.text(0.5, 0.5, "regression: no accuracy", ha="center", va="center")
        ax_acc.set_axis_off()
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    fig.suptitle(title)
    _atomic_write(out / PLOT, lambda f: fig.savefig(f, format="png", dpi=100))


def checkpoint_manager(out: pathlib.Path, *, max_to_keep: int = 3):
    """An orbax ``CheckpointManager`` on ``out/checkpoints`` with synchronous saves."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                           enable_async_checkpointing=False,
                                           cleanup_tmp_directories=True)
    return ocp.CheckpointManager(pathlib.Path(out).absolute() / CHECKPOINTS, options=options)


def saved_epochs(out) -> list:
    """The epochs with a complete checkpoint in ``out``, oldest first (read-only)."""
    path = pathlib.Path(out).absolute() / CHECKPOINTS
    if not path.is_dir():
        return []
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(read_only=True,
                                                                                create=False))
    try:
        return sorted(manager.all_steps())
    finally:
        manager.close()


def save(manager, epoch: int, state: dict):
    """Save ``state`` (a pytree of arrays) as the checkpoint of ``epoch``; returns when it is
    complete on disk."""
    import orbax.checkpoint as ocp

    manager.save(epoch, args=ocp.args.StandardSave(state), force=True)
    manager.wait_until_finished()


def restore(manager, epoch: int, like: dict) -> dict:
    """The checkpoint of ``epoch``, restored with the structure, shapes, dtypes and shardings
    of ``like``."""
    import orbax.checkpoint as ocp

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return manager.restore(epoch, args=ocp.args.StandardRestore(abstract))


def restore_latest(manager, like: dict):
    """``(epoch, state)`` from the newest checkpoint that can be read (see :func:`restore`);
    older steps are tried if the newest fails. Raises ``ValueError`` when none can be read."""
    errors = []
    for epoch in sorted(manager.all_steps(), reverse=True):
        try:
            return epoch, restore(manager, epoch, like)
        except (ValueError, TypeError, KeyError, OSError) as err:  # unreadable or mismatching
            errors.append(f"epoch {epoch}: {type(err).__name__}: {err}")
    raise ValueError("no checkpoint could be restored:\n  " + "\n  ".join(errors or ["none saved"]))
