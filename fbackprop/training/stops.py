"""How a run that stops early explains itself: a non-finite value named by leaf (with the command
that continues at a lower learning rate), or a diverging hand-written gradient located by the
gradient checker at the very batch that diverged."""
from __future__ import annotations

import numpy as np

from ..gradcheck import check
from .epoch import _batch_at, _leaf_names
from .files import CHECKPOINTS

__all__ = ["TrainingStopped", "stopped"]


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


def stopped(setup, config, epoch, status, params, epoch_key, data_dev, history, out,
             last_saved):
    """The error for a stopped epoch: which values went non-finite, or which layers'
    gradients differ from jax.grad (located by the gradient checker, fbackprop.check)."""
    step = int(status["step"])
    where = f"epoch {epoch}, step {step}"
    report = None
    if not np.all(status["finite"]):
        names = [n for n, ok in zip(_leaf_names(params), status["finite"]) if not ok]
        lower = f"{config.lr / 10:g}"
        again = (f"fbackprop train --out {out} --resume --lr {lower} (fb.train(out=..., "
                 f"resume=True, lr={lower}))" if out is not None else
                 f"train again with --lr {lower} (fb.train(..., lr={lower}))")
        msg = (f"training stopped at {where}: non-finite values in {', '.join(names)}. "
               f"The learning rate ({config.optimizer}, lr={config.lr:g}) may be too large; "
               f"lower --lr: {again}.")
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
                f"{out / CHECKPOINTS}.")
    return TrainingStopped(msg, epoch=epoch, step=step, history=history,
                           last_checkpoint=last_saved, report=report)
