"""Jin, "Note on Backpropagation in Neural Networks" (2019): the multi-label MLP (eqs. 6–8, 42–43),
the CNN (eqs. 11–21, 44–50), BPTT for the RNN (eq. 29) and the LSTM (eqs. 30–41).

Each derivation is evaluated with a small forward pass written here, independent of fbackprop's
layers, and compared with jax.grad of that forward."""
import jax
import jax.numpy as jnp
import numpy as np

from .core import Values, equation, sig

J = "Jin"
GATES = ("i", "f", "o", "a")


# --- §1: multi-label MLP with sigmoid cross-entropy --------------------------------------------

def _mlp(rng, n, M=3, K=4, C=3):
    Wh, bh = rng.standard_normal((K, M)), rng.standard_normal(K)
    Wo, bo = rng.standard_normal((C, K)), rng.standard_normal(C)
    X = rng.standard_normal((n, M))
    P = rng.integers(0, 2, (n, C)).astype(float)  # P(y_i = c | x_i) for multi-label targets

    def loss(Wh_, Wo_):  # eq. (6), summed over classes and samples
        A = jax.nn.sigmoid(jax.nn.sigmoid(X @ Wh_.T + bh) @ Wo_.T + bo)
        return -jnp.sum(P * jnp.log(A) + (1 - P) * jnp.log(1 - A))

    Ah = sig(X @ Wh.T + bh)
    Ao = sig(Ah @ Wo.T + bo)
    return Wh, Wo, X, P, Ah, Ao, jax.grad(loss, (0, 1))(Wh, Wo)


@equation(J, "eq. (42) (appendix, one sample)",
          "∂J/∂w_{c,k}⁽ᵒᵘᵗ⁾ = (a_{c,i}⁽ᵒᵘᵗ⁾ − P(y_i = c|x_i)) a_{k,i}⁽ʰ⁾", note="a single sample, n = 1")
def _eq42(rng):
    Wh, Wo, X, P, Ah, Ao, (dWh, dWo) = _mlp(rng, 1)
    return Values(np.outer(Ao[0] - P[0], Ah[0]), dWo)


@equation(J, "eq. (7)", "∂J/∂w_{c,k}⁽ᵒᵘᵗ⁾ = (a_{c,i}⁽ᵒᵘᵗ⁾ − P(y_i = c|x_i)) a_{k,i}⁽ʰ⁾",
          corrected="∂J/∂w_{c,k}⁽ᵒᵘᵗ⁾ = Σ_i (a_{c,i}⁽ᵒᵘᵗ⁾ − P(y_i = c|x_i)) a_{k,i}⁽ʰ⁾",
          debatable=True,
          note="a free index: the right side keeps the sample index i, so it reads as the "
               "gradient of sample i's term of J, which holds (the row above, n = 1); as the "
               "gradient of J (eq. 6), which sums over i, it misses Σ_i (checked with n = 3)")
def _eq7(rng):
    Wh, Wo, X, P, Ah, Ao, (dWh, dWo) = _mlp(rng, 3)
    return Values(np.outer(Ao[0] - P[0], Ah[0]), dWo, (Ao - P).T @ Ah)


@equation(J, "eqs. (8), (43)",
          "∂J/∂w_{k,m}⁽ʰ⁾ = (a_{c,i}⁽ᵒᵘᵗ⁾ − P(y_i = c|x_i)) w_{c,k}⁽ᵒᵘᵗ⁾ a_{k,i}⁽ʰ⁾(1 − a_{k,i}⁽ʰ⁾) a_{m,i}⁽ⁱⁿ⁾",
          corrected="∂J/∂w_{k,m}⁽ʰ⁾ = Σ_i Σ_c (a_{c,i}⁽ᵒᵘᵗ⁾ − P(y_i = c|x_i)) w_{c,k}⁽ᵒᵘᵗ⁾ "
                    "a_{k,i}⁽ʰ⁾(1 − a_{k,i}⁽ʰ⁾) a_{m,i}⁽ⁱⁿ⁾",
          note="a hidden unit feeds every output class: the sum over c is missing (checked with "
               "one sample, C = 3, class c = 1 as written)")
def _eq8(rng):
    Wh, Wo, X, P, Ah, Ao, (dWh, dWo) = _mlp(rng, 1)
    c = 0
    written = np.outer((Ao[0, c] - P[0, c]) * Wo[c] * Ah[0] * (1 - Ah[0]), X[0])
    corrected = (((Ao - P) @ Wo) * Ah * (1 - Ah)).T @ X
    return Values(written, dWh, corrected)


# --- §2: CNN: valid convolution + sigmoid, mean pooling, fully connected -----------------------

def _conv_valid(X, W):
    """Jin eq. (12) with 0-based indices: A(i, j) = Σ_k X(i − k1, j − k2) W(k1, k2) for
    i ≥ m1 − 1, j ≥ m2 − 1 (a true convolution, no padding)."""
    m1, m2 = W.shape
    n1, n2 = X.shape
    out = 0.0
    for k1 in range(m1):
        for k2 in range(m2):
            out = out + X[m1 - 1 - k1: n1 - k1, m2 - 1 - k2: n2 - k2] * W[k1, k2]
    return out


def _conv_setup(rng):
    X, W, b = rng.standard_normal((6, 7)), rng.standard_normal((3, 2)), float(rng.standard_normal())
    G = rng.standard_normal((4, 6))  # ∂J/∂A for J = Σ G ⊙ A

    def J_of(W_, b_):
        return jnp.sum(G * jax.nn.sigmoid(_conv_valid(jnp.asarray(X), W_) + b_))

    A = sig(_conv_valid(X, W) + b)
    dW, db = jax.grad(J_of, (0, 1))(jnp.asarray(W), b)
    return X, W, A, G, dW, db


def _kernel_grad(X, alpha, shape):
    """Σ_{i,j} α(i, j) X(i − k1, j − k2) over the valid output positions."""
    m1, m2 = shape
    n1, n2 = X.shape
    return np.array([[np.sum(alpha * X[m1 - 1 - k1: n1 - k1, m2 - 1 - k2: n2 - k2])
                      for k2 in range(m2)] for k1 in range(m1)])


@equation(J, "eq. (46), third line",
          "∂J/∂W(k1, k2) = Σ_i Σ_j ∂J/∂A(i, j) · A(i, j)(1 − A(i, j)) · X(i − k1, j − k2)",
          note="valid convolution + sigmoid (eqs. 11-12), J = Σ G ⊙ A")
def _eq46_line3(rng):
    X, W, A, G, dW, db = _conv_setup(rng)
    return Values(_kernel_grad(X, G * A * (1 - A), W.shape), dW)


@equation(J, "eqs. (20), (46): α",
          "∂J/∂W(k1, k2) = Σ_i Σ_j α(i, j) X_rot180(k1 − i, k2 − j), with α = ∂J/∂A(i, j) · A(i, j)",
          corrected="α = ∂J/∂A(i, j) · A(i, j)(1 − A(i, j)), the delta at the pre-activation",
          note="α drops the (1 − A) factor of σ' that the line before it has; "
               "X_rot180(k1 − i, k2 − j) = X(i − k1, j − k2) holds")
def _eq46_alpha(rng):
    X, W, A, G, dW, db = _conv_setup(rng)
    return Values(_kernel_grad(X, G * A, W.shape), dW, _kernel_grad(X, G * A * (1 - A), W.shape))


@equation(J, "eqs. (21), (50)", "∂J/∂b⁽ᶜᵒⁿᵛ⁾ = Σ_i Σ_j α(i, j), α = ∂J/∂A · A",
          corrected="∂J/∂b⁽ᶜᵒⁿᵛ⁾ = Σ_i Σ_j ∂J/∂A(i, j) A(i, j)(1 − A(i, j))",
          note="same missing (1 − A); eq. (50)'s last line also multiplies by p1p2 (see eq. 49)")
def _eq21(rng):
    X, W, A, G, dW, db = _conv_setup(rng)
    return Values(np.sum(G * A), db, np.sum(G * A * (1 - A)))


@equation(J, "eq. (49)", "∂J/∂A(i, j) = p1 p2 · ∂J/∂S(⌈i/p1⌉, ⌈j/p2⌉)",
          corrected="∂J/∂A(i, j) = (1/(p1 p2)) · ∂J/∂S(⌈i/p1⌉, ⌈j/p2⌉)",
          note="mean pooling (eq. 13) divides by p1p2, so its derivative does too (p = 2 × 3)")
def _eq49(rng):
    p1, p2 = 2, 3
    A, G = rng.standard_normal((4, 6)), rng.standard_normal((2, 2))  # G = ∂J/∂S

    def J_of(A_):
        S = A_.reshape(2, p1, 2, p2).mean(axis=(1, 3))
        return jnp.sum(G * S)

    up = np.kron(G, np.ones((p1, p2)))
    return Values(p1 * p2 * up, jax.grad(J_of)(jnp.asarray(A)), up / (p1 * p2))


def _fc_setup(rng):
    n, C = 5, 4
    z, W, b = rng.standard_normal(n), rng.standard_normal((C, n)), rng.standard_normal(C)
    c_true = int(rng.integers(0, C))
    P = np.eye(C)[c_true]

    def J_of(W_, b_, z_):  # eqs. (16)-(17): sigmoid outputs, cross-entropy on the true class
        return -jnp.sum(P * jnp.log(jax.nn.sigmoid(W_ @ z_ + b_)))

    yhat = sig(W @ z + b)
    return z, W, b, P, c_true, yhat, jax.grad(J_of, (0, 1, 2))(W, b, z)


@equation(J, "eqs. (18), (19), (44), (45)",
          "∂J/∂W_{c,j}⁽ᶠ⁾ = −(1 − ŷ_c) z_j;  ∂J/∂b_c⁽ᶠ⁾ = −(1 − ŷ_c)",
          corrected="∂J/∂W_{c,j}⁽ᶠ⁾ = −P(y = c|X)(1 − ŷ_c) z_j;  ∂J/∂b_c⁽ᶠ⁾ = −P(y = c|X)(1 − ŷ_c)",
          note="J (eq. 17) only involves the classes with P(y = c|X) > 0; as written every class "
               "gets a gradient (checked for all c with one-hot P)")
def _eq18(rng):
    z, W, b, P, c, yhat, (dW, db, dz) = _fc_setup(rng)
    written = (-np.outer(1 - yhat, z), -(1 - yhat))
    corrected = (-np.outer(P * (1 - yhat), z), -P * (1 - yhat))
    return Values(written, (dW, db), corrected)


@equation(J, "eq. (47)", "∂J/∂z = ∂J/∂ŷ_c · ∂ŷ_c/∂z = −(1/ŷ_c) W_{c,j}",
          corrected="∂J/∂z_j = −Σ_c P(y = c|X)(1 − ŷ_c) W_{c,j}",
          note="∂ŷ_c/∂z = ŷ_c(1 − ŷ_c) W_{c,:}: the σ' factor is missing (c the true class)")
def _eq47(rng):
    z, W, b, P, c, yhat, (dW, db, dz) = _fc_setup(rng)
    return Values(-(1 / yhat[c]) * W[c], dz, -(P * (1 - yhat)) @ W)


# --- §3.2: RNN and BPTT --------------------------------------------------------------------------

def _rnn(rng, T=4, n_in=3, H=4, C=3):
    Wxh, Whh = rng.standard_normal((n_in, H)) * 0.8, rng.standard_normal((H, H)) * 0.6
    bh, Why, by = rng.standard_normal(H), rng.standard_normal((H, C)), rng.standard_normal(C)
    xs = rng.standard_normal((T, n_in))
    ys = np.eye(C)[rng.integers(0, C, T)]

    def J_T(Whh_):  # eqs. (26)-(28), the loss at the last step τ = T
        h = jnp.zeros(H)
        for x in xs:
            h = jnp.tanh(Whh_.T @ h + Wxh.T @ x + bh)
        return -jnp.sum(ys[-1] * jax.nn.log_softmax(Why.T @ h + by))

    hs, zs = [np.zeros(H)], []
    for x in xs:
        zs.append(Whh.T @ hs[-1] + Wxh.T @ x + bh)
        hs.append(np.tanh(zs[-1]))
    yhat = np.exp(Why.T @ hs[-1] + by)
    yhat /= yhat.sum()
    g_T = Why @ (yhat - ys[-1])  # ∂J^(T)/∂h_T
    return Whh, hs, zs, g_T, jax.grad(J_T)(jnp.asarray(Whh))


def _bptt(Whh, hs, zs, g_T, jacobian_factor):
    """Σ_t (∂J/∂h_T)(∂h_T/∂h_t)(∂⁺h_t/∂W_hh), with ∂h_i/∂h_{i−1} applied by ``jacobian_factor``."""
    T = len(zs)
    g, total = g_T, np.zeros_like(Whh)
    for t in range(T, 0, -1):
        dphi = 1 - np.tanh(zs[t - 1]) ** 2
        total += np.outer(hs[t - 1], g * dphi)  # ∂⁺h_t/∂W_hh[a, b] = φ'_t[b] h_{t−1}[a]
        g = jacobian_factor(g, dphi)           # g ← (∂h_t/∂h_{t−1})ᵀ g
    return total


@equation(J, "eq. (29), third line",
          "∂J⁽ᵀ⁾/∂W_hh = ∂J⁽ᵀ⁾/∂y_τ ∂y_τ/∂h_τ (Σ_t Π_{i=t+1}^{τ} W_hh ∂h_t/∂W_hh)",
          corrected="∂h_i/∂h_{i−1} = diag(φ_h'(z_i)) W_hhᵀ (the second line of eq. 29 with this "
                    "Jacobian)",
          note="replacing ∂h_i/∂h_{i−1} by W_hh drops φ_h' (and the transpose of eq. 26's W_hhᵀ); "
               "tanh RNN, T = 4")
def _eq29(rng):
    Whh, hs, zs, g_T, ref = _rnn(rng)
    written = _bptt(Whh, hs, zs, g_T, lambda g, dphi: Whh.T @ g)
    corrected = _bptt(Whh, hs, zs, g_T, lambda g, dphi: Whh @ (dphi * g))
    return Values(written, ref, corrected)


# --- §3.3: LSTM ---------------------------------------------------------------------------------

def _lstm(rng, recurrent=True, T=3, n_in=3, H=4):
    P = {"Wx": {g: rng.standard_normal((H, n_in)) * 0.7 for g in GATES},
         "Wh": {g: rng.standard_normal((H, H)) * 0.7 * recurrent for g in GATES},
         "b": {g: rng.standard_normal(H) * 0.5 for g in GATES}}
    xs, ys = rng.standard_normal((T, n_in)), rng.standard_normal((T, H))
    h0, C0 = rng.standard_normal(H) * 0.5, rng.standard_normal(H) * 0.5

    def run(P_, xp=np):
        tanh = np.tanh if xp is np else jnp.tanh
        sg = sig if xp is np else jax.nn.sigmoid
        h, C, steps = h0, C0, []
        for x in xs:  # eqs. (30)-(35)
            z = {g: P_["Wx"][g] @ x + P_["Wh"][g] @ h + P_["b"][g] for g in GATES}
            i, f, o, a = sg(z["i"]), sg(z["f"]), sg(z["o"]), tanh(z["a"])
            C_prev, h_prev = C, h
            C = a * i + C * f
            h = tanh(C) * o
            steps.append(dict(z=z, i=i, f=f, o=o, a=a, C=C, C_prev=C_prev, h=h, h_prev=h_prev, x=x))
        return steps

    def J_of(P_):  # eq. (36)
        return sum(0.5 * jnp.sum((y - s["h"]) ** 2) for s, y in zip(run(P_, jnp), ys))

    ref = jax.grad(J_of)(jax.tree.map(jnp.asarray, P))
    return P, run(P), ys, ref


def _lstm_bptt(P, steps, ys):
    """The full hand-written BPTT: δh carries the recurrent paths, δC the cell path."""
    H = len(steps[0]["h"])
    grads = {k: {g: np.zeros_like(P[k][g]) for g in GATES} for k in P}
    dh_rec, dC_next, f_next = np.zeros(H), np.zeros(H), np.zeros(H)
    for s, y in zip(reversed(steps), reversed(ys)):
        dh = (s["h"] - y) + dh_rec
        dC = dh * s["o"] * (1 - np.tanh(s["C"]) ** 2) + dC_next * f_next
        dz = {"a": dC * s["i"] * (1 - s["a"] ** 2), "i": dC * s["a"] * s["i"] * (1 - s["i"]),
              "f": dC * s["C_prev"] * s["f"] * (1 - s["f"]),
              "o": dh * np.tanh(s["C"]) * s["o"] * (1 - s["o"])}
        for g in GATES:
            grads["Wx"][g] += np.outer(dz[g], s["x"])
            grads["Wh"][g] += np.outer(dz[g], s["h_prev"])
            grads["b"][g] += dz[g]
        dh_rec = sum(P["Wh"][g].T @ dz[g] for g in GATES)
        dC_next, f_next = dC, s["f"]
    return grads


def _cell_path(steps, ys, extra_o=False):
    """Jin's δC_τ: Σ_{t ≥ τ} (h_t − y_t) ⊙ (1 − tanh²C_t) ⊙ o_t ⊙ f_t ⋯ f_{τ+1} — paths through the
    cell state only; with ``extra_o`` the t > τ terms carry the extra factor o_τ of
    eqs. (38)-(39)."""
    T = len(steps)
    out = []
    for tau in range(T):
        total = 0.0
        for t in range(tau, T):
            term = (steps[t]["h"] - ys[t]) * (1 - np.tanh(steps[t]["C"]) ** 2) * steps[t]["o"]
            for s in range(tau + 1, t + 1):
                term = term * steps[s]["f"]
            if extra_o and t > tau:
                term = term * steps[tau]["o"]
            total = total + term
        out.append(total)
    return out


def _as_written(steps, ys, factor, gate, *, extra_o=False, outer_x=True):
    """Jin's LSTM gradients as written: Σ_τ δC_τ(cell path) ⊙ factor_τ ⊙ (1 − tanh² z_gate,τ),
    times x_τᵀ for an input weight (``outer_x``), alone for a bias."""
    dC = _cell_path(steps, ys, extra_o=extra_o)
    terms = [dC[t] * s[factor] * (1 - np.tanh(s["z"][gate]) ** 2) for t, s in enumerate(steps)]
    return sum(np.outer(d, s["x"]) for d, s in zip(terms, steps)) if outer_x else sum(terms)


@equation(J, "eq. (33)", "a_τ = σ(z_aᵗ) = tanh(W_xa x_τ + W_ha h_{τ−1} + b_a)",
          corrected="a_τ = tanh(z_aᵗ)", note="the cell input is a tanh (as eqs. 37 and 41 "
                                             "differentiate it), not a sigmoid")
def _eq33(rng):
    P, steps, ys, ref = _lstm(rng)
    za = np.stack([s["z"]["a"] for s in steps])
    return Values(sig(za), jnp.tanh(jnp.asarray(za)), np.tanh(za))


@equation(J, "eq. (37), recurrent weights zero",
          "∂J/∂W_xa = Σ_τ [(h_T − y_T) ⊙ (1 − tanh²C_T) ⊙ o_T ⊙ f_T⋯f_{τ+1} + … + (h_τ − y_τ) ⊙ "
          "(1 − tanh²C_τ) ⊙ o_τ] ⊙ i_τ ⊙ (1 − tanh²z_aτ) x_τᵀ",
          note="with W_h· = 0 the cell state is the only path back in time, and eq. (37) holds "
               "(Jin writes σ_T for o_T)")
def _eq37_nonrecurrent(rng):
    P, steps, ys, ref = _lstm(rng, recurrent=False)
    return Values(_as_written(steps, ys, "i", "a"), ref["Wx"]["a"])


@equation(J, "eq. (37)", "∂J/∂W_xa as above (paths through the cell state only)",
          corrected="full BPTT: δh_τ = (h_τ − y_τ) + Σ_g W_hgᵀ δz_g,τ+1;  δC_τ = δh_τ ⊙ o_τ ⊙ "
                    "(1 − tanh²C_τ) + δC_{τ+1} ⊙ f_{τ+1};  ∂J/∂W_xa = Σ_τ (δC_τ ⊙ i_τ ⊙ (1 − a_τ²)) x_τᵀ",
          note="h_τ feeds every gate at τ + 1 through W_hi, W_hf, W_ho, W_ha: those paths are missing")
def _eq37(rng):
    P, steps, ys, ref = _lstm(rng)
    return Values(_as_written(steps, ys, "i", "a"), ref["Wx"]["a"],
                  _lstm_bptt(P, steps, ys)["Wx"]["a"])


@equation(J, "eq. (38)", "∂J/∂W_xi = … ⊙ a_τ ⊙ (1 − tanh²(z_iτ)) x_τ",
          corrected="∂J/∂W_xi = Σ_τ (δC_τ ⊙ a_τ ⊙ i_τ(1 − i_τ)) x_τᵀ (full BPTT)",
          note="the input gate is a sigmoid: σ' = i(1 − i), not 1 − tanh²; the long-path terms also "
               "carry a stray σ_τ; recurrent paths missing as in eq. (37)")
def _eq38(rng):
    P, steps, ys, ref = _lstm(rng)
    return Values(_as_written(steps, ys, "a", "i", extra_o=True), ref["Wx"]["i"],
                  _lstm_bptt(P, steps, ys)["Wx"]["i"])


@equation(J, "eq. (39)", "∂J/∂W_xf = … ⊙ C_{τ−1} ⊙ (1 − tanh²(z_fτ)) x_τ",
          corrected="∂J/∂W_xf = Σ_τ (δC_τ ⊙ C_{τ−1} ⊙ f_τ(1 − f_τ)) x_τᵀ (full BPTT)",
          note="the forget gate is a sigmoid: σ' = f(1 − f); same stray σ_τ and missing paths")
def _eq39(rng):
    P, steps, ys, ref = _lstm(rng)
    return Values(_as_written(steps, ys, "C_prev", "f", extra_o=True), ref["Wx"]["f"],
                  _lstm_bptt(P, steps, ys)["Wx"]["f"])


@equation(J, "eq. (40)", "∂J/∂W_xo = (h_T − y^T) ⊙ tanh(C_τ) ⊙ (1 − tanh²(z_oτ)) x_τ",
          corrected="∂J/∂W_xo = Σ_τ (δh_τ ⊙ tanh(C_τ) ⊙ o_τ(1 − o_τ)) x_τᵀ (full BPTT)",
          note="evaluated as Σ_τ (h_τ − y_τ) ⊙ tanh(C_τ) ⊙ (1 − tanh²z_oτ) x_τᵀ; the output gate "
               "is a sigmoid, and δh_τ includes the recurrent paths")
def _eq40(rng):
    P, steps, ys, ref = _lstm(rng)
    written = sum(np.outer((s["h"] - y) * np.tanh(s["C"]) * (1 - np.tanh(s["z"]["o"]) ** 2), s["x"])
                  for s, y in zip(steps, ys))
    return Values(written, ref["Wx"]["o"], _lstm_bptt(P, steps, ys)["Wx"]["o"])


@equation(J, "eq. (41)", "∂J/∂b_a = Σ_τ [δC_τ through the cell state only] ⊙ i_τ ⊙ (1 − tanh²z_aτ)",
          corrected="∂J/∂b_a = Σ_τ δC_τ ⊙ i_τ ⊙ (1 − a_τ²) (full BPTT)",
          note="as eq. (37); the text also writes ∂a_τ/∂W_xa where it means ∂a_τ/∂b_a")
def _eq41(rng):
    P, steps, ys, ref = _lstm(rng)
    return Values(_as_written(steps, ys, "i", "a", outer_x=False), ref["b"]["a"],
                  _lstm_bptt(P, steps, ys)["b"]["a"])
