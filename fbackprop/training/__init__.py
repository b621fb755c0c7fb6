"""Training with the hand-written gradients: Gordon's learning modes, three gradient sources,
optax optimizers, whole epochs compiled, run directories with checkpoints.

The modules, each with one role:

* :mod:`.optim` — Gordon's gradient descent as an optax transformation, and optax's optimizers;
* :mod:`.config` — defaults and the resolved :class:`TrainConfig` of a run;
* :mod:`.registry` — the one list of model families, targets and costs per task;
* :mod:`.epoch` — one epoch as one compiled function;
* :mod:`.loop` — :func:`train`, :class:`TrainResult`, :class:`TrainingStopped`;
* :mod:`.rundir` — config, metrics, plot and checkpoints on disk (:mod:`.vocab`: a
  token-sequence run's vocabulary);
* :mod:`.sampling` — text from a trained character model;
* :mod:`.distributed` — several processes (hosts): joining them, the mesh over all their
  devices, each process's rows of each batch, process 0 writing the run directory.

The package is ``training`` (not ``train``) so that ``fbackprop.train`` stays the function.
"""
from . import distributed, rundir
from .config import GRADS, MODES, TrainConfig
from .load import predict
from .loop import CheckpointWarning, TrainingStopped, TrainResult, device_info, load_run, train
from .optim import OPTIMIZERS, gordon_gd, make_optimizer
from .registry import COST_FOR_TASK, MODELS, build_model, shape_inputs, targets
from .sampling import sample_text, sample_tokens

__all__ = ["train", "TrainResult", "TrainingStopped", "CheckpointWarning", "load_run", "predict",
           "device_info", "TrainConfig", "gordon_gd",
           "make_optimizer", "build_model", "shape_inputs", "targets", "MODES", "GRADS",
           "OPTIMIZERS", "MODELS", "COST_FOR_TASK", "rundir", "sample_text", "sample_tokens",
           "distributed"]
