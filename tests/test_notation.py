"""Gordon's Euler notation: D, ∇ with ⋆, and ∘, on his own examples."""
import math

import jax.numpy as jnp
import pytest

from fbackprop import D, compose, nabla, star


@pytest.mark.parametrize("m,n", [(2, 3), (3, 2), (4, 1)])
@pytest.mark.parametrize("x", [0.7, 1.3, 2.0])
def test_chain_rule_powers(m, n, x):
    # Gordon: θ1 x = x^m, θ2 x = x^n; D(θ1∘θ2) x = Dθ1(θ2 x)·Dθ2 x = mn·x^(mn−1)
    theta1, theta2 = (lambda v: v**m), (lambda v: v**n)
    lhs = float(D(compose(theta1, theta2))(x))
    rhs = float(D(theta1)(theta2(x)) * D(theta2)(x))
    assert lhs == pytest.approx(rhs, rel=1e-12)
    assert lhs == pytest.approx(m * n * x ** (m * n - 1), rel=1e-12)


@pytest.mark.parametrize("x", [-1.5, 0.2, 2.5])
def test_sin_of_square(x):
    # Gordon: D(λx. sin(x²)) x = cos(x²) × 2x
    assert float(D(lambda v: jnp.sin(v**2))(x)) == pytest.approx(math.cos(x**2) * 2 * x, rel=1e-12)


def test_three_function_chain():
    # Gordon: D(θ1∘θ2∘θ3) x = Dθ1(θ2(θ3 x)) × Dθ2(θ3 x) × Dθ3 x
    t1, t2, t3 = jnp.sin, jnp.exp, (lambda v: v**3)
    x = 0.6
    lhs = float(D(compose(t1, t2, t3))(x))
    rhs = float(D(t1)(t2(t3(x))) * D(t2)(t3(x)) * D(t3)(x))
    assert lhs == pytest.approx(rhs, rel=1e-12)
    # ((θ1∘θ2)∘θ3) and (θ1∘(θ2∘θ3)) are the same function
    assert float(compose(compose(t1, t2), t3)(x)) == float(compose(t1, compose(t2, t3))(x))


def test_nabla_star_is_the_gradient():
    # Gordon's example φ(x, z) = sin(x) + z²: partials cos(x) and 2z
    def phi(x, z):
        return jnp.sin(x) + z**2

    grads = star(nabla(phi), (0.3, -1.2))
    assert float(grads[0]) == pytest.approx(math.cos(0.3), rel=1e-12)
    assert float(grads[1]) == pytest.approx(-2.4, rel=1e-12)
    # a Partial is also the well-typed ℝᵏ → ℝ function of the whole point
    assert float(nabla(phi)[1](0.3, -1.2)) == pytest.approx(-2.4, rel=1e-12)


def test_star_applies_pointwise():
    assert star((lambda v: v + 1, lambda v: 2 * v), (1.0, 5.0)) == (2.0, 10.0)


def test_notation_errors():
    with pytest.raises(TypeError, match="scalar"):
        D(lambda v: v**2)(jnp.ones(3))
    with pytest.raises(ValueError, match="2 functions and 3 arguments"):
        star((abs, abs), (1, 2, 3))
    with pytest.raises(TypeError, match="needs a point with 2 coordinates"):
        nabla(lambda a, b: a * b)[0](1.0)
    with pytest.raises(ValueError, match="at least one function"):
        compose()
    with pytest.raises(TypeError, match="pass it explicitly"):
        nabla(lambda *a: a[0])
