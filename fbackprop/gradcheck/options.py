"""The settings of a gradient check: one frozen :class:`CheckOptions`, shared by ``check``,
``check_grad``, ``check_vjp`` and ``check_layer``, and the tolerances they lead to.

Every entry point takes ``options=CheckOptions(...)`` or keyword arguments that build one
(``fb.check(net, cost, p, x, y, dtype="float32")`` is ``options=CheckOptions(dtype="float32")``);
keywords given beside ``options`` override its fields. The options are checked once, when built.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

from ..inputs import require_choice, require_int, require_number
from .fd import FDPlan, fd_settings
from .kinks import KINK_TOL
from .numerics import FD_EPS, FD_NOISE, FD_TOLERANCE, LOW_PRECISION, TOLERANCE, dtype_name

__all__ = ["CheckOptions", "Tolerances", "options_from", "FIELDS"]


@dataclasses.dataclass(frozen=True)
class CheckOptions:
    """How a gradient check runs and judges.

    Attributes:
      dtype: ``"float64"`` (default; tolerance 1e-10) or ``"float32"`` (1e-4, under the highest
        matmul precision); every floating-point input is cast to it.
      tolerance: overrides the bound of the hand–autodiff rows (a number ≥ 0).
      finite_differences: add central differences (float64 only) with step ``eps`` along
        ``directions`` random unit directions and ``fd_elements`` elements per leaf (the worst
        by |hand − autodiff| and random ones), with a three-way verdict.
      eps: the finite-difference step, in (0, 1); default ``FD_EPS``.
      directions, fd_elements: how many random directions, and elements per leaf, FD takes.
      fd_tolerance: overrides ``FD_TOLERANCE``; FD rows pass within it plus
        ``FD_NOISE``·max(1, |J|)/eps.
      kink_tol: sample points closer than this to a kink (``kink_distance``) are moved away or,
        if they stay, have their mismatches reported as ``"kink"``.
      resample: how many rounds of moving the input away from kinks (``check``, ``check_layer``).
      jvp: add the forward-mode row ⟨u, J v⟩ = ⟨Jᵀu, v⟩ (``check_vjp``, ``check_layer``).
      seed: seeds every random draw of the check (cotangents, perturbations, FD directions).
      jit: compile the check as one program (cached per shapes).
      raise_on_failure: raise :class:`~fbackprop.GradientCheckError` instead of returning a
        failing report.
      matmul_precision: the matmul precision of the check (``jax.default_matmul_precision``):
        ``"highest"`` (default) or ``"float32"``, or, for a float32 check, a lower one
        (``"tensorfloat32"``, ``"bfloat16"``, ``"high"``, ``"default"``), which makes the check
        judge by the error budget.
      budget, budget_floor: the error budget of low-precision checks (``dtype`` bfloat16 or
        float16, or float32 under a lower ``matmul_precision``; ``check``, ``check_vjp``,
        ``check_layer``): the rule's error and autodiff's error, both in that precision and
        both against autodiff in float64 at the same point, and a row passes when
        rule error ≤ ``budget`` × autodiff error + ``budget_floor`` (default 2 and 1e-4).
    """

    dtype: str = "float64"
    tolerance: float | None = None
    finite_differences: bool = False
    eps: float = FD_EPS
    directions: int = 16
    fd_elements: int = 8
    fd_tolerance: float | None = None
    kink_tol: float = KINK_TOL
    resample: int = 5
    jvp: bool = True
    seed: int = 0
    jit: bool = True
    raise_on_failure: bool = False
    matmul_precision: str = "highest"
    budget: float = 2.0
    budget_floor: float = 1e-4

    def __post_init__(self):
        object.__setattr__(self, "dtype", dtype_name(self.dtype, low_precision=True))
        require_choice(self.matmul_precision, MATMUL_PRECISIONS, "matmul_precision")
        if self.dtype == "float64" and self.matmul_precision not in FULL_PRECISION:
            raise ValueError(f"matmul_precision={self.matmul_precision!r} applies to float32 "
                             f"checks, received it with dtype='float64'; drop it, or pass "
                             f"dtype='float32' to check float32 under that precision.")
        require_number(self.budget, "budget", positive=True)
        require_number(self.budget_floor, "budget_floor", minimum=0)
        _ = self.fd  # checks the finite-difference settings
        object.__setattr__(self, "resample", require_int(self.resample, "resample", minimum=0))
        for name in ("tolerance", "fd_tolerance"):
            require_number(getattr(self, name), name, minimum=0, allow_none=True)
        require_number(self.kink_tol, "kink_tol", minimum=0)
        require_int(self.seed, "seed", minimum=0)

    @property
    def low_precision(self) -> bool:
        """Whether the check is judged by the error budget instead of a fixed tolerance."""
        return self.dtype in LOW_PRECISION or self.matmul_precision not in FULL_PRECISION

    @property
    def fd(self) -> FDPlan | None:
        """The finite-difference plan, ``None`` without finite differences."""
        return fd_settings(self.dtype, self.finite_differences, self.eps, self.directions,
                           self.fd_elements)

    def tolerances(self, loss) -> Tolerances:
        """The bounds of a check whose loss J is ``loss``.

        Args:
          loss: the value of J at the sample point (the FD bound adds the rounding floor of
            J(p ± εu), ``FD_NOISE``·max(1, |J|)/ε).

        Returns:
          A :class:`Tolerances`.
        """
        fd = self.fd
        fd_rtol = FD_TOLERANCE if self.fd_tolerance is None else self.fd_tolerance
        fd_tol = fd_rtol + (FD_NOISE * max(1.0, abs(float(loss))) / fd.eps if fd else 0.0)
        if self.low_precision:
            return Tolerances(self.budget_floor, fd_rtol, fd_tol)
        tol = TOLERANCE[self.dtype] if self.tolerance is None else self.tolerance
        return Tolerances(tol, fd_rtol, fd_tol)


MATMUL_PRECISIONS = ("highest", "float32", "high", "tensorfloat32", "bfloat16", "default")
FULL_PRECISION = ("highest", "float32")
FIELDS = frozenset(f.name for f in dataclasses.fields(CheckOptions))


class Tolerances(NamedTuple):
    """The bounds of one check: hand–autodiff rows, and FD rows (the relative part and the
    whole bound with the rounding floor)."""

    tol: float
    fd_rtol: float
    fd_tol: float


def options_from(options, overrides: dict, *, who: str, accepts=FIELDS) -> CheckOptions:
    """The :class:`CheckOptions` of one call: ``options`` (default ``CheckOptions()``) with the
    keyword ``overrides`` in place of its fields.

    Args:
      options: a :class:`CheckOptions` or ``None``.
      overrides: keyword arguments of the call, each the name of a field in ``accepts``.
      who: the entry point, for error messages.
      accepts: the field names this entry point reads.

    Returns:
      The checked :class:`CheckOptions`.

    Raises:
      TypeError: ``options`` is not a CheckOptions, or a keyword is not an option of ``who``.
    """
    if options is not None and not isinstance(options, CheckOptions):
        raise TypeError(f"{who}: options must be an fb.CheckOptions, received "
                        f"{type(options).__name__}. Build one with fb.CheckOptions(dtype=…, …) "
                        f"or pass the settings as keyword arguments.")
    unknown = sorted(set(overrides) - set(accepts))
    if unknown:
        raise TypeError(f"{who}: unexpected keyword argument(s) {unknown}; its options are "
                        f"{sorted(accepts)}.")
    base = CheckOptions() if options is None else options
    return dataclasses.replace(base, **overrides) if overrides else base
