"""Scalar computational graphs: Kamper §3 and Bradbury §2, with the texts' numbers."""
import math

import pytest

from fbackprop import graph


def kamper_graph():
    # Kamper eq. (3): f(x, y) = (x + σ(y)) / (x² + y), split as in his forward-pass code (1)–(6)
    return graph.Graph(("x", "y"), (
        ("a", graph.sigmoid, "y"),        # (1)
        ("b", graph.add, "x", "a"),       # (2)
        ("c", graph.square, "x"),         # (3)
        ("d", graph.add, "y", "c"),       # (4)
        ("e", graph.reciprocal, "d"),     # (5)
        ("f", graph.mul, "b", "e"),       # (6)
    ))


def test_kamper_forward_values():
    v = graph.forward(kamper_graph(), {"x": 3.0, "y": -4.0})
    a = 1.0 / (1 + math.exp(4.0))  # the text's line (1), evaluated independently
    expected = {"a": a, "b": 3 + a, "c": 9.0, "d": 5.0, "e": 0.2, "f": (3 + a) / 5}
    for name, value in expected.items():
        assert float(v[name]) == pytest.approx(value, rel=1e-14)


def test_kamper_accumulators_in_the_texts_order():
    g = kamper_graph()
    v = {k: float(t) for k, t in graph.forward(g, {"x": 3.0, "y": -4.0}).items()}
    # Kamper's backward-pass code, line by line
    x, y, a, b, c, d, e = (v[k] for k in "xyabcde")
    delta_b = e
    delta_e = b
    delta_d = delta_e * (-1.0 / d**2)
    delta_y = delta_d * 1
    delta_c = delta_d * 1
    delta_x = delta_c * (2 * x)
    delta_x2 = delta_x + delta_b * 1
    delta_a = delta_b * 1
    delta_y2 = delta_y + delta_a * ((1 - a) * a)
    text = [("b", "=", delta_b), ("e", "=", delta_e), ("d", "=", delta_d), ("y", "=", delta_y),
            ("c", "=", delta_c), ("x", "=", delta_x), ("x", "+=", delta_x2), ("a", "=", delta_a),
            ("y", "+=", delta_y2)]
    result = graph.backward(g, v)
    got = [(u.target, "=" if u.first else "+=", float(u.total)) for u in result.updates]
    assert [t[:2] for t in got] == [t[:2] for t in text]
    for (_, _, g_val), (_, _, t_val) in zip(got, text):
        assert g_val == pytest.approx(t_val, rel=1e-14)
    # the text's final values, ∂f/∂x ≈ −0.52432 and ∂f/∂y ≈ −0.11719, and jax.grad
    assert float(result.grads["x"]) == pytest.approx(-0.52432, abs=5e-6)
    assert float(result.grads["y"]) == pytest.approx(-0.11719, abs=5e-6)
    ref = graph.reference_grads(g, {"x": 3.0, "y": -4.0})
    assert float(result.grads["x"]) == pytest.approx(float(ref["x"]), rel=1e-14)
    assert float(result.grads["y"]) == pytest.approx(float(ref["y"]), rel=1e-14)


def test_bradbury_single_path_gives_6():
    # y = 2a, a = 3x: chain rule along the path
    g = graph.Graph(("x",), (("a", graph.mul, 3.0, "x"), ("y", graph.mul, 2.0, "a")))
    r = graph.backward(g, graph.forward(g, {"x": 1.7}))
    assert float(r.grads["x"]) == 6.0
    assert float(r.grads["a"]) == 2.0


def test_bradbury_two_paths_give_5():
    # y = 2a₁ + a₂, a₁ = 3x, a₂ = −x: sum rule across the two paths
    g = graph.Graph(("x",), (
        ("a1", graph.mul, 3.0, "x"), ("a2", graph.neg, "x"),
        ("t", graph.mul, 2.0, "a1"), ("y", graph.add, "t", "a2")))
    r = graph.backward(g, graph.forward(g, {"x": -0.4}))
    assert float(r.grads["x"]) == 5.0
    assert sum(u.target == "x" for u in r.updates) == 2  # one accumulator term per path


@pytest.mark.parametrize("n", [1, 3, 8])
def test_bradbury_n_paths(n, rng):
    # y = Σ_j w2_j a_j, a_j = w1_j x  (Bradbury eqs. 12-21)
    w1, w2 = rng.standard_normal(n), rng.standard_normal(n)
    inputs = ("x", *(f"w1_{j}" for j in range(n)), *(f"w2_{j}" for j in range(n)))
    nodes = [(f"a{j}", graph.mul, f"w1_{j}", "x") for j in range(n)]
    nodes += [(f"t{j}", graph.mul, f"w2_{j}", f"a{j}") for j in range(n)]
    total = "t0"
    for j in range(1, n):
        nodes.append((f"s{j}", graph.add, total, f"t{j}"))
        total = f"s{j}"
    nodes.append(("y", graph.mul, 1.0, total))
    g = graph.Graph(inputs, nodes)
    x = 0.9
    values = {"x": x, **{f"w1_{j}": w1[j] for j in range(n)},
              **{f"w2_{j}": w2[j] for j in range(n)}}
    r = graph.backward(g, graph.forward(g, values))
    assert float(r.grads["x"]) == pytest.approx(float(w1 @ w2), rel=1e-13)          # eq. 18
    for j in range(n):
        assert float(r.grads[f"w2_{j}"]) == pytest.approx(w1[j] * x, rel=1e-13)     # eq. 19: a_i
        assert float(r.grads[f"w1_{j}"]) == pytest.approx(w2[j] * x, rel=1e-13)     # eq. 21
    ref = graph.reference_grads(g, values)
    for name in inputs:
        assert float(r.grads[name]) == pytest.approx(float(ref[name]), rel=1e-13, abs=1e-15)


def test_graph_construction_errors():
    with pytest.raises(ValueError,
                       match=r"node 'b' uses 'z', which is neither an input nor an earlier"):
        graph.Graph(("x",), (("a", graph.square, "x"), ("b", graph.add, "a", "z")))
    with pytest.raises(ValueError, match="used twice"):
        graph.Graph(("x",), (("a", graph.square, "x"), ("a", graph.square, "x")))
    with pytest.raises(ValueError, match="add takes 2 inputs, received 1"):
        graph.Graph(("x",), (("a", graph.add, "x"),))
    with pytest.raises(ValueError, match=r"missing \['y'\]"):
        graph.forward(kamper_graph(), {"x": 1.0})
