"""Bradbury, "Tutorial on neural network math for forward and backward propagation" (2019):
§2 chain and sum rules along paths, §3 the bias-free network, Table 1, §4 general equations.
Bradbury writes a for the pre-activation and z = σ(a) for the node value."""
import jax
import jax.numpy as jnp
import numpy as np

from .core import Values, dsig, equation, sig

B = "Bradbury"


@equation(B, "eq. (6)", "y = 2a, a = 3x:  ∂y/∂x = (∂y/∂a)(∂a/∂x) = (2)(3) = 6")
def _eq6(rng):
    x = float(rng.standard_normal())
    return Values(2.0 * 3.0, jax.grad(lambda v: 2 * (3 * v))(x))


@equation(B, "eq. (11)", "y = 2a₁ + a₂, a₁ = 3x, a₂ = −x:  ∂y/∂x = (2)(3) + (1)(−1) = 5")
def _eq11(rng):
    x = float(rng.standard_normal())
    return Values(2.0 * 3.0 + 1.0 * -1.0, jax.grad(lambda v: 2 * (3 * v) + (-v))(x))


@equation(B, "eqs. (17)-(21)",
          "∂y/∂x = Σ_j w_j⁽²⁾ w_j⁽¹⁾;  ∂y/∂w_i⁽²⁾ = a_i;  ∂y/∂w_i⁽¹⁾ = w_i⁽²⁾ x",
          note="y = Σ_j w_j⁽²⁾ a_j, a_j = w_j⁽¹⁾ x (N paths)")
def _n_paths(rng):
    n = int(rng.integers(2, 7))
    w1, w2, x = rng.standard_normal(n), rng.standard_normal(n), float(rng.standard_normal())
    y = lambda x_, w1_, w2_: jnp.sum(w2_ * (w1_ * x_))  # noqa: E731
    return Values((w2 @ w1, w1 * x, w2 * x), jax.grad(y, (0, 2, 1))(x, w1, w2))


def _net(rng, sizes):
    Ws = [rng.standard_normal((m, n)) for n, m in zip(sizes[:-1], sizes[1:])]
    x, y = rng.standard_normal(sizes[0]), rng.uniform(size=sizes[-1])
    z, a = [x], [None]
    for W in Ws:
        a.append(W @ z[-1])
        z.append(sig(a[-1]))

    def E(Ws_, offsets):
        zz = x
        for W, off in zip(Ws_, offsets):
            zz = jax.nn.sigmoid(W @ zz + off)  # offsets on the pre-activations a⁽ᵏ⁾
        return 0.5 * jnp.sum((zz - y) ** 2)

    offsets = [jnp.zeros(m) for m in sizes[1:]]
    dW, dA = jax.grad(E, (0, 1))([jnp.asarray(W) for W in Ws], offsets)  # dA[k−1] = δ⁽ᵏ⁾
    return Ws, x, y, z, a, dW, dA


@equation(B, "§3.1 text and eq. (23)",
          "a₁⁽¹⁾ = x₁ w₁₁⁽¹⁾ + x₂ w₁₂⁽²⁾",
          corrected="a₁⁽¹⁾ = x₁ w₁₁⁽¹⁾ + x₂ w₁₂⁽¹⁾",
          note="superscript slip: both weights belong to layer 1; eq. (23) also writes "
               "z₁⁽ᵏ⁾ = σ(a_i⁽ᵏ⁾)")
def _first_node(rng):
    Ws, x, y, z, a, dW, dA = _net(rng, (2, 2, 2, 1))
    return Values(x[0] * Ws[0][0, 0] + x[1] * Ws[1][0, 1], jnp.asarray(Ws[0] @ x)[0],
                  x[0] * Ws[0][0, 0] + x[1] * Ws[0][0, 1])


@equation(B, "eq. (26)", "W⁽ᵏ⁾ has N_{k+1} rows and N_k columns (w_{N_{k+1} N_k}⁽ᵏ⁾ last)",
          corrected="W⁽ᵏ⁾ is N_k × N_{k−1}, so that a⁽ᵏ⁾ = W⁽ᵏ⁾ z⁽ᵏ⁻¹⁾ (eq. 28)",
          note="checked against the shape of ∂E/∂W⁽ᵏ⁾ for widths 2-3-4-1")
def _eq26(rng):
    sizes = (2, 3, 4, 1)
    Ws, x, y, z, a, dW, dA = _net(rng, sizes)
    k = 2
    N = dict(enumerate(sizes))  # N_k = sizes[k]
    # a statement about shapes: compare (rows, columns) with the shape of the gradient
    return Values(np.array([N[k + 1], N[k]]), np.array(dW[k - 1].shape), np.array([N[k], N[k - 1]]))


@equation(B, "eq. (32)", "∂a_i⁽ᵏ⁾/∂w_ij⁽ᵏ⁻¹⁾ = z_j⁽ᵏ⁻¹⁾",
          corrected="∂a_i⁽ᵏ⁾/∂w_ij⁽ᵏ⁾ = z_j⁽ᵏ⁻¹⁾",
          note="the weight that multiplies z⁽ᵏ⁻¹⁾ into a⁽ᵏ⁾ is layer k's (eq. 24, 40)")
def _eq32(rng):
    Ws, x, y, z, a, dW, dA = _net(rng, (3, 3, 3, 1))
    k, i, j = 2, 1, 2

    def a_k(W1, W2):
        return (W2 @ jax.nn.sigmoid(W1 @ x))[i]

    d_prev, d_own = jax.grad(a_k, (0, 1))(jnp.asarray(Ws[0]), jnp.asarray(Ws[1]))
    return Values(z[k - 1][j], d_prev[i, j], corrected=z[k - 1][j], corrected_reference=d_own[i, j])


@equation(B, "Table 1 and Table 2, steps 1-7",
          "∂E/∂z⁽³⁾ = z⁽³⁾ − y; δ⁽³⁾ = (z⁽³⁾ − y)σ'(a⁽³⁾); ∂E/∂z_i⁽²⁾ = δ⁽³⁾w_i⁽³⁾; "
          "δ_i⁽²⁾ = δ⁽³⁾w_i⁽³⁾σ'(a_i⁽²⁾); ∂E/∂z⁽¹⁾ = W⁽²⁾ᵀδ⁽²⁾; δ⁽¹⁾ = W⁽²⁾ᵀδ⁽²⁾ ∘ σ'(a⁽¹⁾); "
          "∂E/∂x = W⁽¹⁾ᵀδ⁽¹⁾",
          note="the 2-2-2-1 network of Figure 4, E = ½(z⁽³⁾ − y)²")
def _table1(rng):
    Ws, x, y, z, a, dW, dA = _net(rng, (2, 2, 2, 1))

    def E_of(zs_offsets, x_):
        zz = x_
        for W, off in zip(Ws, zs_offsets):
            zz = jax.nn.sigmoid(W @ zz) + off  # offsets on the node values z⁽ᵏ⁾
        return 0.5 * jnp.sum((zz - y) ** 2)

    dZ, dx = jax.grad(E_of, (0, 1))([jnp.zeros(2), jnp.zeros(2), jnp.zeros(1)], x)
    s1 = z[3] - y
    d3 = s1 * dsig(a[3])
    s3 = d3 * Ws[2][0]
    d2 = s3 * dsig(a[2])
    s5 = Ws[1].T @ d2
    d1 = s5 * dsig(a[1])
    s7 = Ws[0].T @ d1
    return Values((s1, d3, s3, d2, s5, d1, s7), (dZ[2], dA[2], dZ[1], dA[1], dZ[0], dA[0], dx))


@equation(B, "eq. (38)", "δ_i⁽ᵏ⁾ = σ'(a_i⁽ᵏ⁾) Σ_{j=1}^{N_k} δ_j⁽ᵏ⁺¹⁾ w_ji⁽ᵏ⁺¹⁾",
          corrected="δ_i⁽ᵏ⁾ = σ'(a_i⁽ᵏ⁾) Σ_{j=1}^{N_{k+1}} δ_j⁽ᵏ⁺¹⁾ w_ji⁽ᵏ⁺¹⁾ (as in §5.2)",
          note="the sum runs over the N_{k+1} nodes of the next layer; checked with N_k = 2, N_{k+1} = 4")
def _eq38(rng):
    sizes = (3, 2, 4, 1)
    Ws, x, y, z, a, dW, dA = _net(rng, sizes)
    k = 1
    d_next = np.asarray(dA[k])  # δ⁽ᵏ⁺¹⁾
    W_next = Ws[k]              # W⁽ᵏ⁺¹⁾, shape (N_{k+1}, N_k)
    written = dsig(a[k]) * (W_next[: sizes[k]].T @ d_next[: sizes[k]])
    return Values(written, dA[k - 1], dsig(a[k]) * (W_next.T @ d_next))


@equation(B, "eqs. (39)-(41)", "δ⁽ᵏ⁾ = W⁽ᵏ⁺¹⁾ᵀ δ⁽ᵏ⁺¹⁾ ∘ σ'(a⁽ᵏ⁾);  ∂E/∂w_ij⁽ᵏ⁾ = δ_i⁽ᵏ⁾ z_j⁽ᵏ⁻¹⁾;  "
          "∂E/∂W⁽ᵏ⁾ = δ⁽ᵏ⁾ z⁽ᵏ⁻¹⁾ᵀ", note="widths 3-4-5-2")
def _eq39_41(rng):
    sizes = (3, 4, 5, 2)
    Ws, x, y, z, a, dW, dA = _net(rng, sizes)
    L = len(Ws)
    deltas = [None] * (L + 1)
    deltas[L] = (z[L] - y) * dsig(a[L])
    for k in range(L - 1, 0, -1):
        deltas[k] = (Ws[k].T @ deltas[k + 1]) * dsig(a[k])
    return Values(([deltas[k] for k in range(1, L + 1)],
                   [np.outer(deltas[k], z[k - 1]) for k in range(1, L + 1)]), (dA, dW))


@equation(B, "§5.2", "δ_i⁽ᴷ⁾ = ∂E_n/∂a_i⁽ᴷ⁾ = (z_i⁽³⁾ − y_i) σ'(a_i⁽³⁾)",
          corrected="δ_i⁽ᴷ⁾ = (z_i⁽ᴷ⁾ − y_i) σ'(a_i⁽ᴷ⁾)",
          note="the example's K = 3 leaked into the general K-layer formula; checked with K = 4")
def _sec52(rng):
    sizes = (2, 3, 2, 2, 2)  # K = 4 layers, layer 3 as wide as the output
    Ws, x, y, z, a, dW, dA = _net(rng, sizes)
    K = 4
    return Values((z[3] - y) * dsig(a[3]), dA[K - 1], (z[K] - y) * dsig(a[K]))
