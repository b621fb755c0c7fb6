"""Scalar and name arguments: ints, numbers, choices, flags, callables (see the package
docstring for the message shape)."""
from __future__ import annotations

import math
import numbers
from typing import Iterable, Optional

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["require_int", "require_positive_int", "require_positive_ints", "require_number",
           "require_fraction", "require_choice", "require_bool", "require_callable", "lookup",
           "require_float_dtype"]


def _say(who: str, argument: str, expected: str, received, fix: str = "") -> str:
    head = f"{who}: " if who else ""
    tail = f" {fix}" if fix else ""
    return f"{head}{argument} must be {expected}, received {received!r}.{tail}"


def _as_python_int(value) -> Optional[int]:
    """``value`` as an int when it is an integer scalar (Python, NumPy or 0-d array), else None;
    bools are not ints here."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, (np.ndarray, jax.Array)) and value.shape == () and \
            jnp.issubdtype(value.dtype, jnp.integer):
        return int(value)
    return None


def require_int(value, argument: str, *, minimum: Optional[int] = None,
                maximum: Optional[int] = None, who: str = "", fix: str = "") -> int:
    """``value`` as a Python int in [``minimum``, ``maximum``] (either bound may be ``None``).

    Args:
      value: the user's value; Python and NumPy integers and 0-d integer arrays are accepted.
      argument: its name in messages.
      minimum, maximum: inclusive bounds.
      who, fix: prefix and remedy of the message.

    Returns:
      ``int(value)``.

    Raises:
      ValueError: not an integer, or out of bounds.
    """
    n = _as_python_int(value)
    bounds = [f"{sign} {b}" for sign, b in (("≥", minimum), ("≤", maximum)) if b is not None]
    expected = ("a positive int" if (minimum, maximum) == (1, None)
                else " ".join(["an int"] + [" and ".join(bounds)] * bool(bounds)))
    if n is None or (minimum is not None and n < minimum) or (maximum is not None and n > maximum):
        raise ValueError(_say(who, argument, expected, value, fix))
    return n


def require_positive_int(value, argument: str, *, who: str = "", fix: str = "") -> int:
    """``value`` as a Python int ≥ 1 (see :func:`require_int`)."""
    return require_int(value, argument, minimum=1, who=who, fix=fix)


def require_positive_ints(value, argument: str, *, n: Optional[int] = None,
                          scalar_ok: bool = True, who: str = "", fix: str = "") -> tuple:
    """A tuple of positive ints: a sequence of them, or (``scalar_ok``) one int repeated ``n``
    times (or taken as a 1-tuple when ``n`` is ``None``). With ``n``, the length must be ``n``.

    Used for sizes, widths, kernel and pool sizes (one entry per spatial axis)."""
    if scalar_ok and _as_python_int(value) is not None:
        t = (value,) * (n or 1)
    elif isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        t = None
    else:
        t = tuple(value)
    ints = None if t is None else [_as_python_int(v) for v in t]
    if ints is None or not ints or any(v is None or v < 1 for v in ints) or \
            (n is not None and len(ints) != n):
        count = f"{n} positive int{'s' if n != 1 else ''}" if n else "positive ints"
        expected = (f"a positive int or a tuple of {count}" if scalar_ok
                    else f"a sequence of {count}")
        raise ValueError(_say(who, argument, expected, value, fix))
    return tuple(ints)


def require_number(value, argument: str, *, minimum: Optional[float] = None,
                   positive: bool = False, allow_none: bool = False, who: str = "",
                   fix: str = "") -> Optional[float]:
    """``value`` as a finite Python float; ``positive`` requires > 0, ``minimum`` ≥ it.

    Python, NumPy and 0-d JAX numbers are accepted (``np.float32(3e-3)`` included); bools are
    not. ``None`` passes through when ``allow_none``."""
    if value is None and allow_none:
        return None
    ok = not isinstance(value, (bool, np.bool_)) and (
        isinstance(value, numbers.Real)
        or (isinstance(value, (np.ndarray, jax.Array)) and value.shape == ()
            and (jnp.issubdtype(value.dtype, jnp.floating)
                 or jnp.issubdtype(value.dtype, jnp.integer))))
    v = float(value) if ok else math.nan
    bound = "> 0" if positive else (f"≥ {minimum:g}" if minimum is not None else "")
    if not (ok and math.isfinite(v) and (not positive or v > 0)
            and (minimum is None or v >= minimum)):
        expected = "a finite number" + (f" {bound}" if bound else "")
        if allow_none:
            expected += " (or None for the default)"
        raise ValueError(_say(who, argument, expected, value, fix))
    return v


def require_fraction(value, argument: str, *, who: str = "", fix: str = "Use e.g. 0.5.") -> float:
    """``value`` as a float strictly between 0 and 1 (a share, such as a train fraction)."""
    try:
        v = require_number(value, argument, who=who)
    except ValueError:
        v = None
    if v is None or not 0 < v < 1:
        raise ValueError(_say(who, argument, "a number strictly between 0 and 1", value, fix))
    return v


def require_choice(value, valid, argument: str, *, who: str = "", fix: str = "",
                   ignore_case: bool = False):
    """``value`` if it is one of ``valid`` (compared case-insensitively with ``ignore_case``,
    returning the canonical spelling); else ``ValueError`` listing the valid names."""
    valid = tuple(valid)
    if ignore_case and isinstance(value, str):
        for v in valid:
            if isinstance(v, str) and v.lower() == value.lower():
                return v
    elif value in valid:
        return value
    head = f"{who}: " if who else ""
    raise ValueError(f"{head}unknown {argument} {value!r}; valid names are "
                     f"{', '.join(map(repr, valid))}." + (f" {fix}" if fix else ""))


def require_bool(value, argument: str, *, who: str = "", fix: str = "") -> bool:
    """``value`` as a Python bool (Python or NumPy bools only: ``"no"`` or ``0`` are refused)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(_say(who, argument, "True or False", value, fix))
    return bool(value)


def require_float_dtype(value, argument: str = "dtype", *, who: str = ""):
    """``value`` as a floating-point ``numpy.dtype`` (``jnp.float32``, ``"float64"``, …);
    ``TypeError`` for anything else (an integer dtype, an unknown name)."""
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(_say(who, argument, "a floating-point dtype such as jnp.float32",
                             value, "Parameters are floating point: pass jnp.float32, "
                                    "jnp.float64 or jnp.bfloat16."))
    return dtype


def require_callable(value, argument: str, *, expected: str, who: str = ""):
    """``value`` if it is callable, else ``TypeError`` saying what was ``expected``."""
    if not callable(value):
        head = f"{who}: " if who else ""
        raise TypeError(f"{head}{argument} must be {expected}, received "
                        f"{type(value).__name__}.")
    return value


def lookup(value, registry: dict, cls: type, *, argument: str, example: str, build_hint: str):
    """Resolve ``value`` — a name in ``registry`` or an instance of ``cls`` — or raise an error
    naming the bad value and listing the valid names."""
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        if value in registry:
            return registry[value]
        raise ValueError(f"unknown {argument} {value!r}; valid names are "
                         f"{', '.join(repr(k) for k in registry)} ({build_hint}).")
    raise TypeError(f"{argument} must be a name such as {example!r} or an fbackprop.{cls.__name__}, "
                    f"received {type(value).__name__}: {value!r}.")


# --- arrays ---------------------------------------------------------------------------------
