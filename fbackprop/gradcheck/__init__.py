"""Gradient checking that names the layer whose hand-written rule is wrong.

The public entry points are :func:`check` (a network, layer by layer), :func:`check_grad` (any
loss and hand-written gradient), :func:`check_vjp` (any ``jax.custom_vjp`` function),
:func:`check_layer` (one layer), the :class:`CheckOptions` they all take, the
:class:`GradientReport` they return, and :func:`check_custom_rules` (every custom rule a run of
any JAX function reaches). The modules, each with one role:

* :mod:`.numerics` — tolerances, dtypes, matmul precision and the one relative-error measure;
* :mod:`.options` — :class:`CheckOptions`, the settings of every check, and its tolerances;
* :mod:`.sampling` — reproducible sample points;
* :mod:`.report` — rows, the report, its rendering and JSON;
* :mod:`.rules` — rules called at trace time, and their autodiff twins;
* :mod:`.fd` — finite differences and the three-way verdict;
* :mod:`.program` — the compiled programs, cached;
* :mod:`.rows` — from program outputs to rows;
* :mod:`.kinks` — resampling away from kinks;
* :mod:`.budget` — low precision judged by its own error budget against float64 autodiff;
* :mod:`.skeleton` — the steps every check shares: draw, compile, run, judge, report;
* :mod:`.check` — ``check`` and ``check_grad``;
* :mod:`.custom` — ``check_vjp`` (any ``jax.custom_vjp`` function, against autodiff of its
  primal or of a reference implementation) and ``check_layer``;
* :mod:`.jaxpr_reader` — every read of JAX internals, for the sweep below;
* :mod:`.custom_rules`, :mod:`.custom_report` — ``check_custom_rules`` (every custom rule a run
  of any JAX function reaches) and its report.
"""
from .check import check, check_grad
from .custom import check_layer, check_vjp
from .custom_report import CustomRulesReport, RuleCheck
from .custom_rules import check_custom_rules
from .kinks import KINK_TOL, RESAMPLE_SCALE
from .numerics import (FD_EPS, FD_NOISE, FD_TOLERANCE, TOLERANCE, error_stats,
                       max_relative_error, precision_for, relative_error, tree_relative_error)
from .options import CheckOptions
from .report import GradientCheckError, GradientReport, Row
from .rules import layer_reference, time_deltas_reference
from .sampling import sample_params, sample_point, sample_target

__all__ = ["check", "check_grad", "check_vjp", "check_layer", "CheckOptions",
           "check_custom_rules", "CustomRulesReport", "RuleCheck", "GradientReport",
           "GradientCheckError", "Row", "FD_EPS",
           "FD_TOLERANCE", "FD_NOISE", "KINK_TOL", "RESAMPLE_SCALE", "TOLERANCE", "error_stats",
           "relative_error", "tree_relative_error", "max_relative_error", "precision_for",
           "layer_reference", "time_deltas_reference", "sample_params", "sample_point",
           "sample_target"]
