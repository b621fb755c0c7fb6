"""Assertions for users' own test suites (pytest or unittest).

``assert_custom_rules(fn, *args, **options)`` runs :func:`fbackprop.check_custom_rules` and fails
with the report's table when a rule reached by ``fn(*args)`` disagrees with autodiff::

    def test_my_model_rules():
        fb.testing.assert_custom_rules(loss, params, x)
"""
from __future__ import annotations

from .gradcheck import CustomRulesReport, check_custom_rules

__all__ = ["assert_custom_rules"]


def assert_custom_rules(fn, *args, **options) -> CustomRulesReport:
    """Assert that every ``jax.custom_vjp``/``jax.custom_jvp`` rule ``fn(*args)`` reaches agrees
    with autodiff of its primal at the operands it received.

    Args:
      fn: any JAX function.
      *args: its arguments.
      **options: keyword options of :func:`fbackprop.check_custom_rules` (``calls``,
        ``tolerance``, ``expect_mismatch``, ``references``, ``seed`` …).

    Returns:
      the (passing) :class:`~fbackprop.CustomRulesReport`.

    Raises:
      AssertionError: a rule failed; the message names it and holds the report's table.
    """
    report = check_custom_rules(fn, *args, **options)
    if not report.ok:
        raise AssertionError(f"{report.failure_message()}\n\n{report}")
    return report
