"""Memory a request needs against what is free: refuse up front what cannot fit (see the package
docstring for the message shape). XLA would otherwise fail at the first read of the array — a raw
``Out of memory allocating … bytes``, or, on some backends, an abort of the process."""
from __future__ import annotations

import math

import jax
import numpy as np

__all__ = ["tree_bytes", "free_bytes", "require_fits"]


def tree_bytes(tree) -> int:
    """The bytes of every leaf of ``tree`` (arrays or ``jax.ShapeDtypeStruct``)."""
    return sum(math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
               for leaf in jax.tree.leaves(tree))


def free_bytes(device=None) -> int | None:
    """The bytes free on ``device`` (an accelerator's ``memory_stats``), or for the host the
    ``MemAvailable`` of ``/proc/meminfo``; ``None`` when neither can be read."""
    device = device if device is not None else jax.local_devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # a backend without memory statistics: fall back to the host's
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _size(n: int) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


def require_fits(nbytes: int, what: str, *, device=None, fix: str = "") -> int:
    """Raise ``ValueError`` when ``nbytes`` exceed the memory free on ``device`` (unknown free
    memory passes).

    Args:
      nbytes: the bytes the request allocates.
      what: what is allocated, for the message (e.g. ``"rnn(3→1000000→2): parameters"``).
      device: where (default: the first local device).
      fix: how to make it fit.

    Returns:
      ``nbytes``.
    """
    free = free_bytes(device)
    if free is not None and nbytes > free:
        where = device if device is not None else jax.local_devices()[0]
        raise ValueError(f"{what} need {_size(nbytes)} ({nbytes:,} bytes), more than the "
                         f"{_size(free)} free on {where}. {fix}".rstrip())
    return nbytes
