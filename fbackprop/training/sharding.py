"""Parameters and optimizer state sharded over the devices (``shard_params=True``,
``--shard-params``): FSDP / ZeRO-3 style, on ``jax.sharding`` alone.

Data parallelism (:mod:`.batches`) keeps a whole copy of the parameters and the optimizer state on
every device. With ``shard_params`` each leaf of both is split along one axis over the same 1-D
``"batch"`` mesh that splits the batch, so a device holds 1/N of every large leaf:

* **The rule** (:func:`partition_spec`): a leaf is split along its largest axis whose size is a
  multiple of the device count N (the first such axis on a tie). A leaf of fewer than
  :data:`MIN_SHARDED_SIZE` elements (biases, layer-norm gains, Adam's step count, the PRNG key),
  or one with no axis divisible by N, stays replicated: splitting it would save little and cost a
  collective per step. The optimizer state's moments have the shapes of the parameters, so the
  same rule places them like their parameters.
* **The step** (:func:`.epoch.epoch_function`): the parameters are constrained to the replicated
  sharding before the forward pass, so XLA all-gathers them; the hand-written backward pass runs
  unchanged on each device's rows of the batch; its gradient is constrained to the parameters'
  sharding, so XLA reduce-scatters it (each device receives the sum over devices of its slice
  only); the optimizer updates each device's slice, and the new parameters and optimizer state
  are constrained to stay split. Every collective is derived by XLA from these sharding
  constraints; none is written here, and none comes from autodiff.
* **Several processes**: the mesh spans every device of every process, so a process holds only
  its devices' slices; :func:`ParamSharding.place` builds each global array from the slices a
  process's devices own (every process computes the same initial values from the same seed).

Checkpoints hold the sharded arrays as they are (orbax writes each slice once, from the process
that owns it, and restores into the shardings of the state it is given).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["MIN_SHARDED_SIZE", "partition_spec", "ParamSharding", "per_device_bytes",
           "host_value", "spans_processes"]

# Leaves with fewer elements stay replicated: 1024 float32 values are 4 KiB.
MIN_SHARDED_SIZE = 1024


def partition_spec(shape, n: int, axis_name: str = "batch", min_size: int = MIN_SHARDED_SIZE):
    """Where a leaf of ``shape`` is split over ``n`` devices.

    Args:
      shape: the leaf's shape.
      n: the number of devices along the mesh axis.
      axis_name: the mesh axis to split along.
      min_size: leaves with fewer elements stay replicated.

    Returns:
      A ``PartitionSpec``: ``axis_name`` at the largest axis whose size is a multiple of ``n``
      (the first one on a tie), or the replicated ``PartitionSpec()`` for a small leaf, a leaf
      with no such axis, or ``n == 1``.
    """
    shape = tuple(shape)
    if n <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return PartitionSpec()
    divisible = [i for i, size in enumerate(shape) if size % n == 0]
    if not divisible:
        return PartitionSpec()
    axis = max(divisible, key=lambda i: (shape[i], -i))
    return PartitionSpec(*([None] * axis + [axis_name]))


class ParamSharding(NamedTuple):
    """The shardings of the parameters and optimizer state over a 1-D mesh (hashable: it is part
    of the key of the compiled-epoch cache).

    Attributes:
      mesh: the mesh that also splits the batch.
      axis_name: its axis.
      min_size: leaves with fewer elements stay replicated (:data:`MIN_SHARDED_SIZE`).
    """

    mesh: Mesh
    axis_name: str = "batch"
    min_size: int = MIN_SHARDED_SIZE

    def sharding(self, shape) -> NamedSharding:
        """The ``NamedSharding`` of a leaf of ``shape`` (see :func:`partition_spec`).

        Args:
          shape: the leaf's shape.

        Returns:
          A ``NamedSharding`` on :attr:`mesh`.
        """
        n = self.mesh.shape[self.axis_name]
        return NamedSharding(self.mesh, partition_spec(shape, n, self.axis_name, self.min_size))

    def constrain(self, tree):
        """``tree`` with each leaf constrained to its sharding (inside a jitted function: XLA
        moves the values there, e.g. by a reduce-scatter of a sum over devices).

        Args:
          tree: a pytree of arrays.

        Returns:
          The same values, constrained.
        """
        return jax.tree.map(
            lambda a: jax.lax.with_sharding_constraint(a, self.sharding(a.shape)), tree)

    def place(self, tree):
        """``tree`` (host values, the same on every process) as global arrays, each leaf split by
        its sharding; a process creates only the slices its devices hold.

        Args:
          tree: a pytree of arrays or numbers.

        Returns:
          The pytree of placed ``jax.Array`` leaves.
        """
        def put(value):
            host = np.asarray(value)
            return jax.make_array_from_callback(host.shape, self.sharding(host.shape),
                                                lambda index: host[index])

        return jax.tree.map(put, tree)


def host_value(leaf) -> np.ndarray:
    """The whole value of ``leaf`` as a NumPy array. A leaf split across processes
    (``shard_params`` with several processes) is all-gathered: every process must then call this
    for the same leaves in the same order.

    Args:
      leaf: a ``jax.Array``, NumPy array or number.

    Returns:
      A NumPy array.
    """
    if spans_processes(leaf):
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return np.asarray(jax.device_get(leaf))


def spans_processes(tree) -> bool:
    """Whether a leaf of ``tree`` is split across processes (so reading it whole is a
    collective).

    Args:
      tree: a pytree.

    Returns:
      ``True`` when some ``jax.Array`` leaf is not fully addressable from this process.
    """
    return any(isinstance(leaf, jax.Array) and not leaf.is_fully_addressable
               for leaf in jax.tree.leaves(tree))


def per_device_bytes(tree) -> dict:
    """The bytes of ``tree`` that each device of this process holds, read from the arrays'
    ``addressable_shards`` (a replicated leaf counts whole on every device).

    Args:
      tree: a pytree of ``jax.Array`` leaves.

    Returns:
      ``{device: bytes}`` for every device of this process that holds part of ``tree``.
    """
    held: dict = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            held[shard.device] = held.get(shard.device, 0) + shard.data.nbytes
    return held
