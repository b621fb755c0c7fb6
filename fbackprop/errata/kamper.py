"""Kamper, "Yet another introduction to backpropagation" (2017): §3 scalar graph, §4 eqs. 14–24."""
import jax
import jax.numpy as jnp
import numpy as np

from .. import graph
from .core import Values, equation

K = "Kamper"


def _f(x, y):
    return (x + jax.nn.sigmoid(y)) / (x**2 + y)  # eq. (3)


def _point(rng):
    return float(rng.uniform(1.0, 3.0)), float(rng.uniform(-0.9, 4.0))  # keeps x² + y > 0


@equation(K, "§3.3 backward-pass code (1)-(6)",
          "delta_x = delta_c·2x + delta_b·1;  delta_y = delta_d·1 + delta_a·(1−a)a",
          note="f(x, y) = (x + σ(y))/(x² + y), at random points with x² + y > 0 (the text's "
               "point is (3, −4))")
def _backward_code(rng):
    x, y = _point(rng)
    a = 1.0 / (1 + np.exp(-y)); b = x + a; c = x**2; d = y + c; e = 1.0 / d  # noqa: E702
    delta_b, delta_e = e, b
    delta_d = delta_e * (-1.0 / d**2)
    delta_y = delta_d * 1
    delta_c = delta_d * 1
    delta_x = delta_c * (2 * x)
    delta_x += delta_b * 1
    delta_a = delta_b * 1
    delta_y += delta_a * ((1 - a) * a)
    return Values(np.array([delta_x, delta_y]), jnp.stack(jax.grad(_f, (0, 1))(x, y)))


def _kamper_graph():
    return graph.Graph(("x", "y"), (
        ("a", graph.sigmoid, "y"), ("b", graph.add, "x", "a"), ("c", graph.square, "x"),
        ("d", graph.add, "y", "c"), ("e", graph.reciprocal, "d"), ("f", graph.mul, "b", "e")))


def _total_derivatives(x, y, names):
    """∂f/∂u for intermediate values u, by jax.grad of f with an offset added to each u."""
    def f_with_offsets(eps):
        off = dict(zip(names, eps))
        a = jax.nn.sigmoid(y) + off.get("a", 0.0)
        b = x + a + off.get("b", 0.0)
        d = y + x**2 + off.get("d", 0.0)
        e = 1.0 / d + off.get("e", 0.0)
        return b * e

    return jax.grad(f_with_offsets)(jnp.zeros(len(names)))


@equation(K, "§3.3 text after backprop of f = b·e",
          "\"a and b are not inputs for any other operations\": δ_a, δ_b final after this step",
          corrected="b and e are not inputs for any other operation: δ_b = e, δ_e = b are final",
          note="a feeds b, so δ_a is still empty after f's step (a prose slip, checked here)")
def _prose_final(rng):
    x, y = _point(rng)
    g = _kamper_graph()
    values = graph.forward(g, {"x": x, "y": y})
    after_f = {u.target: u.total for u in graph.backward(g, values).updates if u.node == "f"}
    return Values(np.array([after_f.get("a", 0.0), after_f.get("b", 0.0)]),
                  _total_derivatives(x, y, ("a", "b")),
                  corrected=np.array([after_f["b"], after_f["e"]]),
                  corrected_reference=_total_derivatives(x, y, ("b", "e")))


def _layer_setup(rng, act):
    g = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh}[act]
    n_prev, n_out = 5, 3
    W = rng.standard_normal((n_out, n_prev))
    b = rng.standard_normal(n_out)
    a_prev = rng.standard_normal(n_prev)
    y = rng.standard_normal(n_out)
    return g, W, b, a_prev, y


def _J(W, b, a_prev, y, g):
    return jnp.sum((y - g(W @ a_prev + b)) ** 2)  # eq. (14): J = ‖y − a_L‖², no ½


def _gprime(g, z):
    return jax.vmap(jax.grad(g))(z)


@equation(K, "eq. (15)", "δ_aL = ∂‖y − a_L‖²/∂a_L = −2(y − a_L)")
def _eq15(rng):
    a, y = rng.standard_normal(4), rng.standard_normal(4)
    return Values(-2 * (y - a), jax.grad(lambda a_: jnp.sum((y - a_) ** 2))(a))


@equation(K, "eq. (17)", "∂a_L/∂z_L = diag(g'(z_L))")
def _eq17(rng):
    z = rng.standard_normal(4)
    return Values(np.diag(1 - np.tanh(z) ** 2), jax.jacobian(jnp.tanh)(z))


@equation(K, "eqs. (21)-(23)", "δ_z = δ_a ⊙ g'(z);  δ_b = δ_z;  δ_W = δ_z a_{l−1}ᵀ",
          note="last layer of a sigmoid net with J = ‖y − ŷ‖²")
def _eq21_23(rng):
    g, W, b, a_prev, y = _layer_setup(rng, "sigmoid")
    z = W @ a_prev + b
    delta_a = -2 * (y - jax.nn.sigmoid(z))
    delta_z = delta_a * np.asarray(_gprime(g, z))
    ref = jax.grad(_J, (0, 1))(W, b, a_prev, y, g)
    return Values((np.outer(delta_z, a_prev), delta_z), ref)


@equation(K, "eq. (24)", "δ_a_{l−1} = W_lᵀ δ_z_l")
def _eq24(rng):
    g, W, b, a_prev, y = _layer_setup(rng, "tanh")
    z = W @ a_prev + b
    delta_z = -2 * (y - np.tanh(z)) * (1 - np.tanh(z) ** 2)
    return Values(W.T @ delta_z, jax.grad(_J, 2)(W, b, a_prev, y, g))


@equation(K, "§4.2, after eq. (24)", "δ_z_l = (W_{l+1}ᵀ δ_z_{l+1}) ⊙ g'(z_l)",
          note="two tanh layers, J = ‖y − ŷ‖²")
def _combined(rng):
    W1, b1 = rng.standard_normal((4, 3)), rng.standard_normal(4)
    W2, b2 = rng.standard_normal((2, 4)), rng.standard_normal(2)
    x, y = rng.standard_normal(3), rng.standard_normal(2)
    z1 = W1 @ x + b1
    z2 = W2 @ np.tanh(z1) + b2
    delta_z2 = -2 * (y - np.tanh(z2)) * (1 - np.tanh(z2) ** 2)

    def J_of_z1(z1_):
        return jnp.sum((y - jnp.tanh(W2 @ jnp.tanh(z1_) + b2)) ** 2)

    return Values((W2.T @ delta_z2) * (1 - np.tanh(z1) ** 2), jax.grad(J_of_z1)(z1))


@equation(K, "§4.2, after eq. (20)",
          "δ_zL ∈ ℝ^D and a ∈ ℝ^(D−1), so δ_WL = δ_zL a_{L−1}ᵀ ∈ ℝ^(D×D_{L−1})",
          corrected="a_{L−1} ∈ ℝ^(D_{L−1})",
          note="the width of layer L−1 is D_{L−1}, not D − 1: the stated sizes (D, D − 1) of "
               "δ_zL a_{L−1}ᵀ compared with the shape of ∂J/∂W_L, for random widths with "
               "D_{L−1} ≠ D − 1 (where the slip would not show)")
def _dims(rng):
    D = int(rng.integers(2, 6))
    D_prev = int(rng.choice([n for n in range(2, 8) if n != D - 1]))
    g = jax.nn.sigmoid
    W, b = rng.standard_normal((D, D_prev)), rng.standard_normal(D)
    a_prev, y = rng.standard_normal(D_prev), rng.standard_normal(D)
    z = W @ a_prev + b
    delta_z = -2 * (y - g(z)) * np.asarray(_gprime(g, z))  # eqs. (15), (21)
    dW = jax.grad(_J)(W, b, a_prev, y, g)
    # a statement about sizes: compare (rows, columns) with the shape of the gradient
    return Values(np.array([delta_z.size, D - 1]), np.array(dW.shape),
                  np.array(np.outer(delta_z, a_prev).shape))  # eq. (23)
