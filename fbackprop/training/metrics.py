"""A run's metrics (one JSON line per epoch, appended atomically and read back strictly) and its
plot."""
from __future__ import annotations

import json
import math
import os
import pathlib

from .. import plotting
from ..plotting import loss_unit, write_plot
from .rundir import METRICS, atomic_write

__all__ = ["append_metrics", "read_metrics", "rewrite_metrics", "write_plot", "loss_unit",
           "submit_plot", "plot_run"]


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


def submit_plot(out, history: list, title: str = ""):
    """Hand a finished run's metrics to the plot process :func:`fbackprop.plotting.start_process`
    started (``fbackprop train`` starts one), which draws while the run writes its last
    checkpoint; :func:`plot_run` waits for it.

    Returns:
      The :class:`~fbackprop.plotting.PlotProcess` drawing, or ``None`` without one.
    """
    proc = plotting.take_process()
    if proc is not None:
        proc.submit(out, list(history), title)
    return proc


def plot_run(out, history: list, title: str = "", submitted=None):
    """Draw a run's ``plot.png``: wait for the ``submitted`` drawing (:func:`submit_plot`; if
    ``None``, submitted now), or draw here (:func:`write_plot`) without a plot process.

    Raises:
      OSError, ValueError: the plot could not be written.
    """
    if submitted is None:
        submitted = submit_plot(out, history, title)
    if submitted is None:
        write_plot(out, history, title)
    else:
        submitted.finish()
