"""Training with the hand-written gradients: Gordon's learning modes, three gradient sources,
optax optimizers, whole epochs compiled, run directories with checkpoints, several processes.

The modules, each one concept, in the order a run meets them (:mod:`.loop` names its steps):

* :mod:`.config` — the settings: defaults, per-data-set defaults, the resolved
  :class:`TrainConfig`, and the :class:`Settings` every step reads;
* :mod:`.registry` — the one list of model families, the network each builds for a data set,
  and how a data set's examples and targets meet it;
* :mod:`.optim` — Gordon's gradient descent as an optax transformation, and optax's optimizers;
* :mod:`.batches` — the batch order of an epoch, where arrays are placed, and the feed of each
  epoch's data, with one process or several;
* :mod:`.epoch` — one epoch as one compiled function, and the cache of compiled epochs;
* :mod:`.rundir` — the run directory: its files, written atomically, its creation, a resume's
  checks, its lock, its config and vocabulary;
* :mod:`.metrics` — one metrics line per epoch, and the plot;
* :mod:`.checkpoints` — verified orbax checkpoints, restored newest first;
* :mod:`.sharding` — parameters and optimizer state split over the devices (``shard_params``);
* :mod:`.distributed` — several processes: joining them, their mesh, process 0's writes and
  the verdicts all processes share;
* :mod:`.loop` — :func:`train` as four steps, :class:`TrainResult`, :class:`TrainingStopped`;
* :mod:`.load` — a saved run back for use (:func:`load_run`), predictions (:func:`predict`);
* :mod:`.sampling` — text from a trained character model.

Caches (each owned by one module, each keyed by values or by the object it serves, none
correct only because another cache returned the same object): the built networks
(:mod:`.registry`), the compiled epochs (:mod:`.epoch`) and the sampler's compiled steps
(:mod:`.sampling`); :func:`clear_caches` empties all three. A network the user builds twice is
two different objects and compiles twice (the module docstring of :mod:`.epoch` says why).

The package is ``training`` (not ``train``) so that ``fbackprop.train`` stays the function.
"""
from . import distributed, epoch, registry, rundir, sampling, sharding
from .config import GRADS, MODES, Settings, TrainConfig
from .load import load_run, predict
from .loop import (
    CheckpointWarning,
    NearChanceWarning,
    TrainingStopped,
    TrainResult,
    device_info,
    prepare,
    train,
    train_prepared,
)
from .optim import OPTIMIZERS, gordon_gd, make_optimizer
from .registry import COST_FOR_TASK, MODELS, build_model, shape_inputs, targets
from .sampling import sample_text, sample_tokens

__all__ = ["train", "prepare", "train_prepared", "TrainResult", "TrainingStopped",
           "CheckpointWarning", "NearChanceWarning", "load_run", "predict", "device_info",
           "TrainConfig", "Settings", "gordon_gd", "make_optimizer", "build_model",
           "shape_inputs", "targets", "MODES", "GRADS", "OPTIMIZERS", "MODELS", "COST_FOR_TASK",
           "rundir", "sample_text", "sample_tokens", "distributed", "sharding", "clear_caches"]


def clear_caches():
    """Empty the training caches: built networks, compiled epochs, compiled sampling steps.

    The next run builds and compiles again (``jax.jit``'s own caches and the persistent
    compilation cache are JAX's and are left alone).
    """
    registry.clear_cache()
    epoch.clear_cache()
    sampling.clear_cache()
