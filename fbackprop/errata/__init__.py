"""Errata for the five source texts, found by checking every implemented equation against
``jax.grad`` (``fbackprop errata``; the table is in docs/ERRATA.md).

Importing this package registers the entries of each text, in the texts' order.
"""
from . import kamper, gordon, bradbury, fleuret, jin  # noqa: F401, I001  (registration order)
from .core import (DEBATABLE, DRAWS, FAILS, HOLDS, HOLDS_TOL, REGISTRY, TEXTS, Entry, Result,
                   Values, counts, discrepancy, headline, render_markdown, render_text, run)

__all__ = ["DEBATABLE", "DRAWS", "FAILS", "HOLDS", "HOLDS_TOL", "REGISTRY", "TEXTS", "Entry",
           "Result", "Values", "counts", "discrepancy", "headline", "render_markdown",
           "render_text", "run"]
