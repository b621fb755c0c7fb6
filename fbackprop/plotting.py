"""The plot of a run (loss and accuracy against epochs), and a process that draws it.

Nothing here imports JAX, so that ``python -m fbackprop.plotting`` is a small process:
:class:`PlotProcess` starts it when a run starts, where it imports matplotlib (about half a
second) on another core while the run imports JAX, compiles and trains; at the end the run
sends it the metrics and it draws ``plot.png`` while the run writes its last checkpoint. This is
what ``fbackprop train`` does (a large part of a short run's start-up time is matplotlib);
:func:`write_plot` draws in the calling process.

The protocol is one JSON line each way: ``{"out", "history", "title"}`` in, then
``{"ok": true}`` or ``{"error": TYPE, "message": TEXT}`` out, and the process exits; closing its
standard input before sending anything ends it too.
"""
from __future__ import annotations

import io
import json
import math
import os
import pathlib
import subprocess
import sys

from .files import atomic_write

__all__ = ["PLOT", "loss_unit", "write_plot", "PlotProcess", "start_process", "take_process",
           "close_process"]

PLOT = "plot.png"
# The errors of write_plot that the process reports by name and PlotProcess raises again.
REPORTED = {"OSError": OSError, "ValueError": ValueError}
# Seconds to wait for the drawing before drawing in this process instead.
REPLY_SECONDS = 60.0


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
    fig = _figure(history, title)
    atomic_write(pathlib.Path(out) / PLOT, lambda f: fig.savefig(f, format="png", dpi=100))


def _figure(history: list, title: str):
    """The figure :func:`write_plot` saves."""
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
    return fig


class PlotProcess:
    """A ``python -m fbackprop.plotting`` process, started now, that draws one plot later.

    :meth:`draw` sends the metrics and waits for the plot; if the process is gone or does not
    answer in :data:`REPLY_SECONDS`, it draws in this process instead, so a plot is never lost
    to the process. :meth:`close` ends a process that was not used (a run that failed before its
    end); a process whose parent dies sees its standard input close and exits.
    """

    def __init__(self):
        self._request = None
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "fbackprop.plotting"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
        except OSError:
            self._proc = None  # draw() draws here

    def draw(self, out, history: list, title: str = ""):
        """Draw ``plot.png`` in ``out`` (as :func:`write_plot`): :meth:`submit`, then
        :meth:`finish`.

        Raises:
          OSError, ValueError: as :func:`write_plot` raises them.
        """
        self.submit(out, history, title)
        self.finish()

    def submit(self, out, history: list, title: str = ""):
        """Send the plot to draw and return at once (the process draws while the caller goes on;
        :meth:`finish` waits for it)."""
        self._request = (out, history, title)
        if self._proc is not None:
            line = json.dumps({"out": str(out), "history": history, "title": title})
            try:
                self._proc.stdin.write(line + "\n")
                self._proc.stdin.flush()  # finish()'s communicate closes it
            except OSError:  # the process is gone: finish() draws here
                self.close()

    def finish(self):
        """Wait for the plot :meth:`submit` sent, or draw it here if the process has no answer.

        Raises:
          OSError, ValueError: as :func:`write_plot` raises them.
        """
        (out, history, title), self._request = self._request, None
        reply = self._reply()
        if reply is None:
            write_plot(out, history, title)
        elif "error" in reply:
            raise REPORTED[reply["error"]](reply["message"])

    def _reply(self):
        """The process's reply, or ``None`` when it has none to give."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        try:
            reply, _ = proc.communicate(timeout=REPLY_SECONDS)
            reply = json.loads(reply)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
            return None
        ok = isinstance(reply, dict) and (reply.get("ok") is True
                                          or reply.get("error") in REPORTED)
        return reply if ok else None

    def close(self):
        """End the process if :meth:`draw` did not use it (it holds nothing: it is killed)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.communicate()


_started = None  # the PlotProcess start_process started, until take_process hands it out


def start_process():
    """Start a :class:`PlotProcess` for this process's next plot (:func:`take_process`), unless
    one is started or matplotlib is imported here already (then drawing here costs little).

    ``fbackprop train`` calls it first thing, before it parses its arguments and imports JAX,
    so that matplotlib's import overlaps JAX's on another core.
    """
    global _started
    if _started is None and "matplotlib" not in sys.modules:
        _started = PlotProcess()


def take_process():
    """The process :func:`start_process` started (``None`` if none); the next call gets
    ``None``."""
    global _started
    proc, _started = _started, None
    return proc


def close_process():
    """End the process :func:`start_process` started if nothing took it."""
    proc = take_process()
    if proc is not None:
        proc.close()


def _warm_up():
    """Draw a throw-away plot into memory: the first drawing loads the fonts and the Agg
    canvas (about as long as the import), which is better done before the run asks."""
    rows = [{"epoch": e, "loss": 1.0 / e, "test_loss": 1.0 / e, "test_accuracy": 0.5}
            for e in (1, 2)]
    _figure(rows, "warm-up").savefig(io.BytesIO(), format="png", dpi=100)


def serve(stdin=sys.stdin, stdout=sys.stdout) -> int:
    """The plot process: import matplotlib, read one request, draw it, answer, exit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.backends.backend_agg  # noqa: F401  (savefig loads it: import it now)
    import matplotlib.figure  # noqa: F401
    import matplotlib.ticker  # noqa: F401

    _warm_up()
    line = stdin.readline()
    if not line:
        return 0  # the run ended without a plot
    request = json.loads(line)
    try:
        write_plot(request["out"], request["history"], request["title"])
        reply = {"ok": True}
    except tuple(REPORTED.values()) as err:
        reply = {"error": next(k for k, v in REPORTED.items() if isinstance(err, v)),
                 "message": str(err)}
    stdout.write(json.dumps(reply) + "\n")
    stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(serve())
