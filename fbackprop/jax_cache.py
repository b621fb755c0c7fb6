"""JAX's persistent compilation cache for the ``fbackprop`` command.

Checking a configuration compiles one XLA program; the cache keeps the compiled programs on disk
so that the next run of ``fbackprop check`` only traces them. The cache lives in
``$FBACKPROP_CACHE_DIR`` if that is set (an empty value turns the cache off), else in
``$XDG_CACHE_HOME/fbackprop/jax`` (default ``~/.cache/fbackprop/jax``). A cache directory the user
has already given JAX (``JAX_COMPILATION_CACHE_DIR``) is kept.

The cache must be enabled before the first compilation in the process: JAX decides once per
process whether it is used.
"""
from __future__ import annotations

import os
import pathlib

import jax

__all__ = ["ENV", "default_cache_dir", "enable_compilation_cache"]

ENV = "FBACKPROP_CACHE_DIR"


def default_cache_dir() -> pathlib.Path | None:
    """The cache directory the environment asks for.

    ``$FBACKPROP_CACHE_DIR`` if set (an empty or blank value turns the cache off), else
    ``$XDG_CACHE_HOME/fbackprop/jax``, else ``~/.cache/fbackprop/jax``.

    Returns:
      The directory as a :class:`pathlib.Path` (not created), or ``None`` when the cache is off.
    """
    value = os.environ.get(ENV)
    if value is not None:
        return pathlib.Path(value).expanduser() if value.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "fbackprop" / "jax"


def enable_compilation_cache(path=None) -> str | None:
    """Turn on JAX's persistent compilation cache and cache every program, however quick.

    Must run before the first compilation in the process: JAX decides once per process whether
    the cache is used. A directory already given to JAX (``JAX_COMPILATION_CACHE_DIR``) is kept;
    a directory that cannot be created leaves the cache off rather than failing.

    Args:
      path: the cache directory (``~`` is expanded); default :func:`default_cache_dir`.

    Returns:
      The directory in use, as a string, or ``None`` when the cache is off.
    """
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    directory = pathlib.Path(path).expanduser() if path is not None else default_cache_dir()
    if directory is None:
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home must not stop the check; it just runs uncached
    jax.config.update("jax_compilation_cache_dir", str(directory))
    # fbackprop's programs compile in well under JAX's default 1 s threshold: cache them all.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return str(directory)
