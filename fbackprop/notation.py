"""Gordon's Euler notation as code: D, ∇ (``nabla``), ⋆ (``star``) and ∘ (``compose``).

Gordon ("Notation for functions", "The chain rule") writes derivatives as
higher-order functions rather than as Leibniz fractions:

* ``D : (ℝ → ℝ) → (ℝ → ℝ)`` maps φ to its derivative function, so ``D(phi)(x)`` is φ'(x).
* ``∇φ`` is the tuple of partial-derivative functions of φ : ℝᵏ → ℝ, the i-th being
  ``D(λv. φ(p₁, …, v, …, p_k))``.
* ``(φ₁, …, φ_k) ⋆ (p₁, …, p_k) = (φ₁ p₁, …, φ_k p_k)`` applies a tuple of functions pointwise,
  and Gordon's ``∇φ(p₁, …, p_k)`` abbreviates ``∇φ ⋆ (p₁, …, p_k)``.
* ``θ₁ ∘ θ₂`` is composition, ``(θ₁ ∘ θ₂) x = θ₁ (θ₂ x)``.

Gordon himself notes that ``∇φ : (ℝᵏ → ℝ) → (ℝ → ℝ)ᵏ`` is a convention rather than a well-typed
statement: the i-th partial ``D(λv. φ(p₁, …, v, …, p_k))`` depends on the other coordinates
p_j (j ≠ i). Here each element of ``nabla(phi)`` is a :class:`Partial`; ``star`` binds it at the
point it is applied to, which is exactly Gordon's convention, and a ``Partial`` can also be called
on the whole point as the well-typed function ℝᵏ → ℝ.

``D`` and ``nabla`` are built on ``jax.grad``: they are notation for the reader, not part of the
hand-written backward path (``fbackprop.manual_grad`` never calls them).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

__all__ = ["D", "nabla", "star", "compose", "Partial"]


def _scalar_input(fn_name: str, x):
    x = jnp.asarray(x)
    if x.ndim != 0:
        raise TypeError(
            f"{fn_name} differentiates functions ℝ → ℝ: expected a scalar argument, "
            f"received an array of shape {x.shape}. Apply it to one number at a time "
            "(or use jax.vmap over the derivative function)."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def D(phi: Callable) -> Callable:
    """Euler's derivative operator: ``D(phi)`` is the derivative function of φ : ℝ → ℝ.

    Gordon, "Notation for functions": ``D : (ℝ → ℝ) → (ℝ → ℝ)`` maps φ to φ', so ``D(phi)(x)``
    evaluates φ'(x). Built on ``jax.grad``; integers are promoted to the default float type, so
    ``D(lambda x: x**3)(2)`` is 12.0.

    Example (Gordon, "The chain rule using Euler notation": ``D(θ₁ ∘ θ₂) x = Dθ₁(θ₂ x) · Dθ₂ x``)::

        >>> D(compose(jnp.sin, lambda x: x**2))(1.0)  # cos(1)·2

    Args:
      phi: a function ℝ → ℝ, scalar in and scalar out, differentiable by ``jax.grad``.

    Returns:
      The derivative function ``x ↦ φ'(x)``. It takes a scalar (a 0-d array or a Python number)
      and returns a 0-d floating array; called on an array of any other shape it raises
      ``TypeError`` (use ``jax.vmap`` over it instead).

    Raises:
      TypeError: if ``phi`` is not callable.
    """
    if not callable(phi):
        raise TypeError(f"D expects a function ℝ → ℝ, received {type(phi).__name__}: {phi!r}.")
    dphi = jax.grad(phi)

    def derivative(x):
        return dphi(_scalar_input("D(phi)", x))

    derivative.__name__ = f"D({getattr(phi, '__name__', 'phi')})"
    derivative.__doc__ = f"Derivative function of {getattr(phi, '__name__', 'phi')}."
    return derivative


class Partial:
    """The i-th partial derivative of φ : ℝᵏ → ℝ, Gordon's ``D(λv. φ(p₁, …, v, …, p_k))``.

    Gordon, "The chain rule": the i-th element of ∇φ depends on the other coordinates p_j
    (j ≠ i), so it is only a function ℝ → ℝ once they are fixed. A ``Partial`` supports both
    readings:

    * ``partial(p₁, …, p_k)`` evaluates ∂φ/∂v_i at the point (the well-typed ℝᵏ → ℝ reading);
    * ``partial.at(ps)`` is the one-variable function ``λv. D(λv. φ(p₁, …, v, …, p_k)) v``
      with the other coordinates fixed at ``ps`` (Gordon's ℝ → ℝ reading), which is what
      :func:`star` applies to ``p_i``.

    Both raise ``TypeError`` when the point does not have ``arity`` coordinates. Instances are
    normally built by :func:`nabla`.

    Attributes:
      phi: the function φ : ℝᵏ → ℝ, taking ``arity`` scalar arguments.
      index: i, the 0-based position of the coordinate differentiated.
      arity: k, the number of arguments of φ.
    """

    def __init__(self, phi: Callable, index: int, arity: int):
        self.phi, self.index, self.arity = phi, index, arity

    def __call__(self, *ps):
        self._check_point(ps)
        return self.at(ps)(ps[self.index])

    def at(self, ps: Sequence) -> Callable:
        """``λv. D(λv. φ(p₁, …, v, …, p_k)) v``: the i-th partial as a function ℝ → ℝ at ``ps``.

        Args:
          ps: the point (p₁, …, p_k), ``arity`` scalars; its i-th coordinate is ignored.

        Returns:
          A derivative function as built by :func:`D`, scalar in and scalar out.

        Raises:
          TypeError: if ``ps`` does not have ``arity`` coordinates.
        """
        self._check_point(ps)
        i = self.index

        def phi_of_v(v):
            return self.phi(*ps[:i], v, *ps[i + 1:])

        return D(phi_of_v)

    def _check_point(self, ps):
        if len(ps) != self.arity:
            raise TypeError(
                f"the partial derivative ∂φ/∂v_{self.index + 1} of a {self.arity}-argument φ needs "
                f"a point with {self.arity} coordinates, received {len(ps)}."
            )

    def __repr__(self):
        name = getattr(self.phi, "__name__", "phi")
        return f"Partial({name}, index={self.index}, arity={self.arity})"


def nabla(phi: Callable, arity: int | None = None) -> tuple[Partial, ...]:
    """Gordon's ∇: the tuple of the k partial-derivative functions of φ : ℝᵏ → ℝ.

    Gordon, "The chain rule": ``∇φ = (D(λv. φ(v, p₂, …, p_k)), …, D(λv. φ(p₁, …, p_{k−1}, v)))``,
    and ``∇φ(p₁, …, p_k)`` abbreviates ``∇φ ⋆ (p₁, …, p_k)``. Use with :func:`star`:
    ``star(nabla(phi), (p1, p2))`` is the gradient ∇φ(p₁, p₂) as a tuple.

    Args:
      phi: a function ℝᵏ → ℝ of k scalar positional arguments.
      arity: k. When omitted it is read from φ's signature: the positional parameters without a
        default.

    Returns:
      A tuple of k :class:`Partial` objects, the i-th for ∂φ/∂v_i.

    Raises:
      TypeError: if ``phi`` is not callable, or takes ``*args`` and ``arity`` is omitted.
      ValueError: if the arity is not an int ≥ 1.
    """
    if not callable(phi):
        raise TypeError(f"nabla expects a function ℝᵏ → ℝ, received {type(phi).__name__}.")
    if arity is None:
        params = inspect.signature(phi).parameters.values()
        kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params):
            raise TypeError(
                "nabla cannot read the number of arguments of a function taking *args; "
                "pass it explicitly, e.g. nabla(phi, arity=3)."
            )
        arity = sum(1 for p in params if p.kind in kinds and p.default is inspect.Parameter.empty)
    if not isinstance(arity, int) or arity < 1:
        raise ValueError(f"nabla needs a function of at least one argument, arity={arity!r}.")
    return tuple(Partial(phi, i, arity) for i in range(arity))


def star(fs: Sequence[Callable], ps: Sequence) -> tuple:
    """Gordon's ⋆: ``(φ₁, …, φ_k) ⋆ (p₁, …, p_k) = (φ₁ p₁, …, φ_k p_k)``.

    Gordon, "Notation for functions". Elements of ``fs`` that are :class:`Partial` derivatives
    are first bound at the point ``ps`` (Gordon's convention for ``∇φ(p₁, …, p_k)``); plain
    functions are applied as they are.

    Args:
      fs: k functions (φ₁, …, φ_k), plain callables or :class:`Partial` objects.
      ps: k arguments (p₁, …, p_k); scalars when ``fs`` holds partials.

    Returns:
      The tuple (φ₁ p₁, …, φ_k p_k) of k results.

    Raises:
      ValueError: if ``fs`` and ``ps`` differ in length.
    """
    fs, ps = tuple(fs), tuple(ps)
    if len(fs) != len(ps):
        raise ValueError(
            f"⋆ applies functions pointwise, so it needs as many functions as arguments: "
            f"received {len(fs)} functions and {len(ps)} arguments."
        )
    return tuple(f.at(ps)(p) if isinstance(f, Partial) else f(p) for f, p in zip(fs, ps))


def compose(*fs: Callable) -> Callable:
    """Function composition ∘, right to left: ``compose(f, g, h)(x) == f(g(h(x)))``.

    Gordon, "Notation for functions": ``(θ₁ ∘ θ₂) x = θ₁ (θ₂ x)``.

    Args:
      *fs: one or more functions of one argument, applied last to first.

    Returns:
      The composed function of one argument; its ``__name__`` joins the names with " ∘ ".

    Raises:
      ValueError: if no function is given.
      TypeError: if an argument is not callable.
    """
    if not fs:
        raise ValueError("compose needs at least one function; received none.")
    for f in fs:
        if not callable(f):
            raise TypeError(f"compose expects functions, received {type(f).__name__}: {f!r}.")

    def composed(x):
        for f in reversed(fs):
            x = f(x)
        return x

    composed.__name__ = " ∘ ".join(getattr(f, "__name__", "f") for f in fs)
    return composed
