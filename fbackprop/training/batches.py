"""The batches of an epoch: their order, where they are placed, and how they reach the compiled
epoch, with one process or several.

* **Order** (:func:`batch_order`): Gordon's minibatches, subsets drawn without replacement from a
  permutation of the training set shuffled with the epoch's key; the last subset is what remains,
  padded to a whole batch with examples whose mask is 0. The compiled epoch, the multi-process
  feed and a stopped run's report (:func:`batch_at`) all read this one function.
* **Placement** (:func:`placement`): one device; several local devices splitting each batch
  along a 1-D ``"batch"`` mesh (when the batch size divides evenly); or, in a multi-process run,
  the same mesh over every device of every process (:func:`.distributed.placement`).
* **Feed** (:class:`Feed`): one process places the whole data set once and the compiled epoch
  gathers each batch by index; with several processes each process brings, each epoch, only its
  own rows of every batch.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import distributed as multiprocess

__all__ = ["batch_order", "batch_at", "placement", "Feed"]


def batch_order(key, n_train: int, batch_size: int):
    """The minibatches of the epoch shuffled with ``key``.

    Args:
      key: the epoch's ``jax.random`` key.
      n_train: the number of training examples.
      batch_size: examples per batch.

    Returns:
      ``(indices, mask)``, each of shape (steps, batch_size), steps = ⌈n_train / batch_size⌉:
      indices into the training set, and 1.0 for a real example, 0.0 for the padding that fills
      the last batch (it adds nothing to the cost or the gradient).
    """
    steps = -(-n_train // batch_size)
    perm = jax.random.permutation(key, n_train)
    padded = jnp.concatenate([perm, perm[:steps * batch_size - n_train]])
    mask = (jnp.arange(steps * batch_size) < n_train).astype(jnp.float32)
    return padded.reshape(steps, batch_size), mask.reshape(steps, batch_size)


# The epoch's batches on the host, computed as one compiled program rather than op by op.
_batch_table = jax.jit(batch_order, static_argnums=(1, 2))


def batch_at(step: int, epoch_key, host: dict, batch_size: int):
    """The examples that step ``step`` of the epoch shuffled with ``epoch_key`` trained on,
    without the padding (drawn by :func:`batch_order`, as the compiled epoch draws them).

    Args:
      step: the 0-based step within the epoch.
      epoch_key: the epoch's key.
      host: ``x_train`` and ``y_train`` as host (NumPy) arrays.
      batch_size: examples per batch.

    Returns:
      ``(x, y)``: host arrays of the batch's examples and targets.
    """
    idx, mask = (np.asarray(a[step]) for a in _batch_table(
        np.asarray(epoch_key), len(host["x_train"]), batch_size))
    idx = idx[mask > 0]
    return host["x_train"][idx], host["y_train"][idx]


def placement(devices, batch_size: int):
    """Where the epoch's arrays go.

    Args:
      devices: the local devices to split batches across (``None``: all of them); ignored in a
        multi-process run, which uses every device of every process.
      batch_size: the global batch size.

    Returns:
      ``(n, batch_sharding, replicated, place)``: how many devices each batch is split across,
      the sharding that splits rows and the replicated one (both ``None`` on one device), and
      ``place``, which puts a host value where the epoch expects it (replicated).

    Raises:
      ValueError: an empty device list, or in a multi-process run a global batch size that is
        not a multiple of the total device count.
    """
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


class Feed:
    """The data of each epoch, where the compiled epoch reads it: ``feed(epoch_key)`` → dict.

    One process: the whole data set is placed once and is the same every epoch (the compiled
    epoch draws its batches from it by index). Several processes: the test set is placed once,
    replicated; of the training set, each process brings, each epoch, only its own rows of every
    batch: the epoch's batches are drawn from ``epoch_key`` by :func:`batch_order`, each process
    takes its columns of the ``(steps, batch)`` index table and
    ``jax.make_array_from_process_local_data`` assembles the global ``(steps, batch, ...)``
    arrays, split along the batch axis. So each global batch holds the same examples in the same
    order as on one device, and a device holds only its rows.

    Args:
      host: ``x_train``, ``y_train``, ``x_test``, ``y_test`` as host (NumPy) arrays.
      batch_size: the global batch size.
      put: places a host array as the epoch expects it (replicated).
      batch_sharding: the sharding that splits rows (``None`` with one device).

    Attributes:
      host: the host arrays (read when a stopped run locates the batch that failed).
      batch_size: the global batch size.
    """

    def __init__(self, host: dict, batch_size: int, put, batch_sharding):
        self.host, self.batch_size = host, batch_size
        if jax.process_count() == 1:
            self._placed = {k: put(v) for k, v in host.items()}
            return
        self._placed = {k: put(host[k]) for k in ("x_test", "y_test")}
        n = len(host["x_train"])
        self._shape = (-(-n // batch_size), batch_size)  # (steps, batch)
        self._sharding = NamedSharding(batch_sharding.mesh, PartitionSpec(None, "batch"))
        self._columns = _local_columns(self._sharding, self._shape)
        # The mask is replicated, so that each step counts its examples without a collective.
        mask = (np.arange(self._shape[0] * batch_size) < n).reshape(self._shape)
        self._placed["mask"] = put(mask.astype(np.float32))

    def _global(self, table):
        """The global array whose process-local columns are ``table[:, self._columns]``."""
        return jax.make_array_from_process_local_data(
            self._sharding, np.ascontiguousarray(table[:, self._columns]), table.shape)

    def __call__(self, epoch_key) -> dict:
        """The arrays the compiled epoch reads in the epoch shuffled with ``epoch_key``."""
        if jax.process_count() == 1:
            return self._placed
        # The key is replicated; computed here, on this process's host, the batches are the
        # compiled epoch's (the same threefry bits, whatever the device).
        idx = np.asarray(_batch_table(np.asarray(epoch_key), len(self.host["x_train"]),
                                      self.batch_size)[0])
        return {**self._placed, "x_batches": self._global(self.host["x_train"][idx]),
                "y_batches": self._global(self.host["y_train"][idx])}


def _local_columns(sharding, shape) -> slice:
    """The batch columns of a ``(steps, batch)`` table that this process's devices hold."""
    spans = {(index[1].start or 0, shape[1] if index[1].stop is None else index[1].stop)
             for index in sharding.addressable_devices_indices_map(shape).values()}
    start, stop = min(s for s, _ in spans), max(e for _, e in spans)
    if sum(e - s for s, e in spans) != stop - start:
        raise ValueError(f"the devices of process {jax.process_index()} must hold adjacent "
                         f"columns of each batch; received the column ranges {sorted(spans)}. "
                         f"Order the mesh's devices by process (jax.devices() does).")
    return slice(start, stop)
