"""The texts' feedforward derivations, evaluated: each table or equation is written out in NumPy
exactly as the text gives it and compared with fbackprop's manual pass and with jax.grad."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fbackprop as fb
from fbackprop.gradcheck import TOLERANCE, tree_relative_error

ETA = 0.5  # any η: the tables give Δp = −η·(gradient)


def sig(z):
    return 1 / (1 + np.exp(-z))


def dsig(z):
    return sig(z) * (1 - sig(z))


def gordon_neuron(b):
    """Gordon's neuron with one weight and a fixed bias: f w a = σ(w a + b)."""
    def init(key):
        return jax.random.normal(key, ())

    def apply(w, a):
        return jax.nn.sigmoid(w * a + b)

    def D_input(w, a, d):  # D(f w) = λv. σ'(w v + b) w   (Gordon, "Instantiating the pseudocode")
        s = apply(w, a)
        return d * s * (1 - s) * w

    def D_param(w, a, d):  # D(λv. f v a) = λv. σ'(v a + b) a
        s = apply(w, a)
        return jnp.sum(d * s * (1 - s) * a)

    return fb.Layer(init, apply, D_input, D_param, name="σ(w·a + b)")


def test_gordon_one_neuron_chain_with_shared_bias():
    b, x, g = 0.3, 0.8, 0.25
    net = fb.serial(*[gordon_neuron(b) for _ in range(4)], input_shape=(1,))
    w = (0.7, -1.1, 0.9, 1.4)
    params = tuple(jnp.asarray(v) for v in w)
    X, Y = jnp.array([[x]]), jnp.array([[g]])
    out = fb.backprop(net, "mse")(params, X, Y)
    # Gordon's forward pass and unwound backward pass, as written
    a = [x]
    for wi in w:
        a.append(sig(wi * a[-1] + b))
    d = {4: a[4] - g}
    d[3] = d[4] * dsig(w[3] * a[3] + b) * w[3]
    d[2] = d[3] * dsig(w[2] * a[2] + b) * w[2]
    d[1] = d[2] * dsig(w[1] * a[1] + b) * w[1]
    dw = {i: -ETA * d[i] * dsig(w[i - 1] * a[i - 1] + b) * a[i - 1] for i in range(1, 5)}
    for i in range(1, 5):
        assert float(out.deltas[i][0, 0]) == pytest.approx(d[i], rel=1e-12)
        assert float(-ETA * out.grads[i - 1]) == pytest.approx(dw[i], rel=1e-12)
    ref = jax.grad(fb.loss_fn(net, "mse"))(params, X, Y)
    assert tree_relative_error(out.grads, ref) <= TOLERANCE["float64"]


def _dense_chain_params(w, b):
    return tuple({"W": jnp.array([[wi]]), "b": jnp.array([bi])} for wi, bi in zip(w, b))


def test_gordon_one_neuron_chain_with_separate_biases():
    x, g = -0.6, 0.9
    w, b = (0.5, -1.3, 1.1, 0.8), (0.2, -0.4, 0.1, 0.3)
    net = fb.mlp((1, 1, 1, 1, 1), "sigmoid")
    params = _dense_chain_params(w, b)
    out = fb.backprop(net, "mse")(params, jnp.array([[x]]), jnp.array([[g]]))
    a = [x]
    for wi, bi in zip(w, b):
        a.append(sig(wi * a[-1] + bi))
    z = {i: w[i - 1] * a[i - 1] + b[i - 1] for i in range(1, 5)}
    # Gordon's d_i table ("Calculating bias deltas")
    d = {4: a[4] - g}
    for i in (3, 2, 1):
        d[i] = d[i + 1] * dsig(z[i + 1]) * w[i]
    # his δ_i = d_i σ'(w_i a_{i−1} + b_i), so δ_3 = δ_4 w_4 σ'(z_3) — the vectorised-pseudocode
    # form; the first δ-table in the text writes σ'(w_4 a_3 + b_4) there (see the errata)
    delta = {4: (a[4] - g) * dsig(z[4])}
    for i in (3, 2, 1):
        delta[i] = delta[i + 1] * dsig(z[i]) * w[i]
    for i in range(1, 5):
        assert delta[i] == pytest.approx(d[i] * dsig(z[i]), rel=1e-13)
        assert float(out.deltas[i][0, 0]) == pytest.approx(d[i], rel=1e-12)
        assert float(-ETA * out.grads[i - 1]["W"][0, 0]) == pytest.approx(
            -ETA * delta[i] * a[i - 1], rel=1e-12)
        assert float(-ETA * out.grads[i - 1]["b"][0]) == pytest.approx(-ETA * delta[i], rel=1e-12)


def _nielsen_bp(ws, bs, x, y):
    """Gordon's vectorised pseudocode (BP1–BP4) for one example, column vectors as in the text."""
    a, zs = [x], []
    for W, b in zip(ws, bs):
        zs.append(W @ a[-1] + b)
        a.append(sig(zs[-1]))
    L = len(ws)
    deltas = [None] * L
    deltas[L - 1] = (a[L] - y) * dsig(zs[L - 1])                          # BP1
    for l in range(L - 2, -1, -1):
        deltas[l] = (ws[l + 1].T @ deltas[l + 1]) * dsig(zs[l])            # BP2
    dW = [np.outer(deltas[l], a[l]) for l in range(L)]                     # BP4: a_k δ_j
    db = [deltas[l] for l in range(L)]                                     # BP3
    return dW, db


@pytest.mark.parametrize("sizes", [(2, 2, 2, 2, 2), (3, 5, 4, 2), (4, 1, 3)],
                         ids=["two-neuron-per-layer", "varying-widths", "bottleneck"])
def test_gordon_vectorised_pseudocode(sizes, rng):
    net = fb.mlp(sizes, "sigmoid")
    params = tuple({"W": jnp.asarray(rng.standard_normal((m, n))),
                    "b": jnp.asarray(rng.standard_normal(m))}
                   for n, m in zip(sizes[:-1], sizes[1:]))
    x, y = rng.standard_normal(sizes[0]), rng.uniform(size=sizes[-1])
    dW, db = _nielsen_bp([np.asarray(p["W"]) for p in params],
                         [np.asarray(p["b"]) for p in params], x, y)
    manual = fb.manual_grad(net, "mse")(params, jnp.asarray(x)[None], jnp.asarray(y)[None])
    for l, g in enumerate(manual):
        np.testing.assert_allclose(g["W"], dW[l], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(g["b"], db[l], rtol=1e-12, atol=1e-15)
    ref = jax.grad(fb.loss_fn(net, "mse"))(params, jnp.asarray(x)[None], jnp.asarray(y)[None])
    assert tree_relative_error(manual, ref) <= TOLERANCE["float64"]


@pytest.mark.parametrize("act", ["sigmoid", "tanh"])
def test_kamper_equations_21_to_24(act, rng):
    # J = ‖y − ŷ‖² (eq. 14, no ½): δ_aL = −2(y − a_L) (15); δ_z = δ_a ⊙ g'(z) (21);
    # δ_b = δ_z (22); δ_W = δ_z a_{l−1}ᵀ (23); δ_a_{l−1} = Wᵀ δ_z (24)
    g, dg = ((sig, dsig) if act == "sigmoid" else (np.tanh, lambda z: 1 - np.tanh(z) ** 2))
    sizes = (3, 4, 5, 2)
    net = fb.mlp(sizes, act)
    params = tuple({"W": jnp.asarray(rng.standard_normal((m, n))),
                    "b": jnp.asarray(rng.standard_normal(m))}
                   for n, m in zip(sizes[:-1], sizes[1:]))
    x, y = rng.standard_normal(3), rng.standard_normal(2)
    a, zs = [x], []
    for p in params:
        zs.append(np.asarray(p["W"]) @ a[-1] + np.asarray(p["b"]))
        a.append(g(zs[-1]))
    delta_a = -2 * (y - a[-1])
    expected = []
    for l in range(len(params) - 1, -1, -1):
        delta_z = delta_a * dg(zs[l])
        expected.append((l, np.outer(delta_z, a[l]), delta_z))
        delta_a = np.asarray(params[l]["W"]).T @ delta_z
    out = fb.backprop(net, "sse")(params, jnp.asarray(x)[None], jnp.asarray(y)[None])
    for l, dW, db in expected:
        np.testing.assert_allclose(out.grads[l]["W"], dW, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(out.grads[l]["b"], db, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out.deltas[0][0], delta_a, rtol=1e-12, atol=1e-15)  # ∂J/∂x


def test_bradbury_table_1(rng):
    # Bias-free net 2 → 2 → 2 → 1, E = ½(z⁽³⁾ − y)², δ at the pre-activation a⁽ᵏ⁾ (Table 1)
    sizes = (2, 2, 2, 1)
    net = fb.mlp(sizes, "sigmoid", bias=False)
    Ws = [rng.standard_normal((m, n)) for n, m in zip(sizes[:-1], sizes[1:])]
    params = tuple({"W": jnp.asarray(W)} for W in Ws)
    x, y = rng.standard_normal(2), rng.uniform()
    z, a = [x], [None]
    for W in Ws:
        a.append(W @ z[-1])
        z.append(sig(a[-1]))
    step1 = z[3] - y                                              # ∂E/∂z⁽³⁾
    delta3 = step1 * dsig(a[3])                                   # step 2
    step3 = delta3 * Ws[2][0]                                     # ∂E/∂z⁽²⁾_i = δ⁽³⁾ w_i⁽³⁾
    delta2 = step3 * dsig(a[2])                                   # step 4
    step5 = Ws[1].T @ delta2                                      # Σ_j δ_j⁽²⁾ w_ji⁽²⁾
    delta1 = step5 * dsig(a[1])                                   # step 6
    step7 = Ws[0].T @ delta1                                      # ∂E/∂x (step 7)
    out = fb.backprop(net, "mse")(params, jnp.asarray(x)[None], jnp.asarray([[y]]))
    np.testing.assert_allclose(out.deltas[3][0], step1, rtol=1e-12)
    np.testing.assert_allclose(out.deltas[2][0], step3, rtol=1e-12)
    np.testing.assert_allclose(out.deltas[1][0], step5, rtol=1e-12)
    np.testing.assert_allclose(out.deltas[0][0], step7, rtol=1e-12)
    for k, delta in ((1, delta1), (2, delta2), (3, delta3)):     # eq. 41: δ⁽ᵏ⁾ z⁽ᵏ⁻¹⁾ᵀ
        np.testing.assert_allclose(out.grads[k - 1]["W"], np.outer(delta, z[k - 1]), rtol=1e-12)
    ref_x = jax.grad(fb.loss_fn(net, "mse"), argnums=1)(params, jnp.asarray(x)[None],
                                                        jnp.asarray([[y]]))
    np.testing.assert_allclose(out.deltas[0], ref_x, rtol=1e-12)
