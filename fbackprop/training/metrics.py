"""A run's metrics (one JSON line per epoch, appended atomically and read back strictly) and its
plot."""
from __future__ import annotations

import json
import math
import os
import pathlib

from .rundir import METRICS, PLOT, atomic_write

__all__ = ["append_metrics", "read_metrics", "rewrite_metrics", "write_plot",
           "loss_unit"]


def _json_row(row: dict) -> str:
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
             for k, v in row.items()}
    return json.dumps(clean, allow_nan=False)


def append_metrics(out: pathlib.Path, row: dict):
    """Append one epoch's metrics as a JSON line (one write, then fsync).

    Args:
      out: the run directory.
      row: the epoch's metrics; non-finite floats are written as ``null``.
    """
    line = (_json_row(row) + "\n").encode()
    fd = os.open(pathlib.Path(out) / METRICS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_metrics(out, *, upto_epoch=None) -> list:
    """The metrics rows saved in ``out``, read strictly.

    Args:
      out: the run directory.
      upto_epoch: keep only the rows of epochs ≤ this (``None``: all); with it, the rows kept
        must be exactly epochs 1 … ``upto_epoch``.

    Returns:
      One dict per epoch, oldest first. A torn last line (no newline at the end, not JSON: a
      process killed mid-write) is left out.

    Raises:
      ValueError: the file is missing (while ``upto_epoch`` > 0), a line other than a torn last
        one is not a JSON object with an ``epoch``, or epochs are missing; the message names the
        file and the line.
    """
    path = pathlib.Path(out).absolute() / METRICS
    if not path.exists():
        if upto_epoch:
            raise ValueError(f"--resume: {path} is missing, but the checkpoint to resume is at "
                             f"epoch {upto_epoch}, so the metrics of epochs 1 … {upto_epoch} are "
                             f"lost. Restore the file, or pass --force (force=True) without "
                             f"--resume to start the run over.")
        return []
    *lines, tail = path.read_text(errors="replace").split("\n")  # tail: after the last newline
    rows = []
    for n, line in enumerate(lines + [tail] * bool(tail), start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if n > len(lines):
                break  # a torn last line (no newline after it): dropped on resume
            raise ValueError(f"{path}, line {n}: not a JSON line ({err.msg}): {line[:80]!r}. "
                             f"The file was changed by something other than the trainer; "
                             f"repair or delete that line, or start the run over with "
                             f"--force.") from None
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
            raise ValueError(f"{path}, line {n}: expected a JSON object with an integer "
                             f"\"epoch\", received {line[:80]!r}. Repair or delete that line, or "
                             f"start the run over with --force.")
        if upto_epoch is None or row["epoch"] <= upto_epoch:
            rows.append(row)
    if upto_epoch is not None and [r["epoch"] for r in rows] != list(range(1, upto_epoch + 1)):
        raise ValueError(f"--resume: {path} must hold one line for each of epochs 1 … "
                         f"{upto_epoch} (the checkpoint to resume), received epochs "
                         f"{[r['epoch'] for r in rows]}. Restore the file, or start the run over "
                         f"with --force.")
    return rows


def rewrite_metrics(out: pathlib.Path, rows: list):
    """Replace the metrics file by ``rows``, atomically.

    Args:
      out: the run directory.
      rows: one dict per epoch.
    """
    atomic_write(pathlib.Path(out) / METRICS,
                  lambda f: f.write("".join(_json_row(r) + "\n" for r in rows).encode()))


def loss_unit(row: dict) -> tuple:
    """Which loss a metrics row's plot and progress bar show, and its unit.

    Args:
      row: a metrics row.

    Returns:
      ``(train_key, test_key, label, short)``: per token for token sequences
      (``loss_per_token``, ``test_loss_per_token``: cross-entropy in nats per scored token),
      the cross-entropy or logistic loss per example in nats where there is an accuracy, else
      the regression's squared error per example, ½‖y − a‖²; ``label`` names it on a plot's
      axis, ``short`` on the progress bar.
    """
    if row.get("test_loss_per_token") is not None or row.get("loss_per_token") is not None:
        return ("loss_per_token", "test_loss_per_token", "cross-entropy (nats per token)",
                "nats/token")
    if row.get("test_accuracy") is not None:
        return "loss", "test_loss", "loss (nats per example)", "loss (nats)"
    return "loss", "test_loss", "squared error ½‖y − a‖² per example", "½‖y−a‖²"


def write_plot(out: pathlib.Path, history: list, title: str = ""):
    """Plot training loss, test loss and the accuracies against epochs into ``plot.png``.

    The loss is per token for token sequences, per example otherwise, in the unit of
    :func:`loss_unit`; a regression run (no accuracy) gets the loss panel alone.

    Args:
      out: the run directory.
      history: the metrics rows (``None`` values are drawn as gaps).
      title: the figure's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    def col(name):
        return [math.nan if r.get(name) is None else r[name] for r in history]

    epochs = [r["epoch"] for r in history]
    accuracy = any(r.get("test_accuracy") is not None for r in history)
    fig = Figure(figsize=(9, 3.6) if accuracy else (5, 3.6), layout="constrained")
    axes = fig.subplots(1, 2 if accuracy else 1, squeeze=False)[0]
    train_key, test_key, label, _ = loss_unit(history[-1])
    axes[0].plot(epochs, col(train_key), label="training loss (during the epoch)")
    axes[0].plot(epochs, col(test_key), label="test loss")
    axes[0].set(xlabel="epoch", ylabel=label, yscale="log")
    axes[0].legend()
    if accuracy:
        axes[1].plot(epochs, col("train_accuracy"), label="train accuracy")
        axes[1].plot(epochs, col("test_accuracy"), label="test accuracy")
        axes[1].set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.01))
        axes[1].legend()
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    fig.suptitle(title)
    atomic_write(pathlib.Path(out) / PLOT, lambda f: fig.savefig(f, format="png", dpi=100))


# --- checkpoints ----------------------------------------------------------------------------
