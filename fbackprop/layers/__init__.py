"""Layers: each an ``f p a`` with its two hand-written Euler derivatives beside it."""
from .base import Layer
from .dense import dense

__all__ = ["Layer", "dense"]
