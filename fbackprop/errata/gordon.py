"""Gordon, "My attempt to understand the backpropagation algorithm": Euler notation, the chain
rule, gradient descent, the one- and two-neuron-per-layer examples, BP1–BP4, the pseudocode."""
import jax
import jax.numpy as jnp
import numpy as np

from .core import Values, dsig, equation, sig

G = "Gordon"
ETA = 0.5


@equation(G, "The chain rule using Euler notation",
          "D(θ₁∘θ₂)x = Dθ₁(θ₂ x)·Dθ₂ x = mn·x^(mn−1) for θ₁ = x^m, θ₂ = x^n")
def _powers(rng):
    m, n = (int(v) for v in rng.integers(1, 5, 2))
    x = float(rng.uniform(0.5, 2.0))
    ref = jax.grad(lambda v: (v**n) ** m)(x)
    return Values(np.array([m * (x**n) ** (m - 1) * n * x ** (n - 1), m * n * x ** (m * n - 1)]),
                  jnp.stack([ref, ref]))


@equation(G, "The chain rule using Euler notation",
          "D(θ₁∘θ₂∘θ₃)x = Dθ₁(θ₂(θ₃ x))·Dθ₂(θ₃ x)·Dθ₃ x", note="θ₁ = sin, θ₂ = exp, θ₃ = x³")
def _three(rng):
    x = float(rng.uniform(-1.0, 1.0))
    written = np.cos(np.exp(x**3)) * np.exp(x**3) * 3 * x**2
    return Values(written, jax.grad(lambda v: jnp.sin(jnp.exp(v**3)))(x))


@equation(G, "The chain rule using Leibniz notation", "D(λx. sin(x²)) x = cos(x²)·2x")
def _sin_sq(rng):
    x = float(rng.uniform(-2.0, 2.0))
    return Values(np.cos(x**2) * 2 * x, jax.grad(lambda v: jnp.sin(v**2))(x))


def _phi(v1, v2):
    return jnp.sin(v1) * v2 + 0.5 * v2**2 + jnp.exp(0.3 * v1)


@equation(G, "Gradient descent, two-dimensional case",
          "∇φ(p)·∇φ(p) = (r₁ + r₂)·(r₁ + r₂) = r₁² + r₂²",
          corrected="∇φ(p)·∇φ(p) = (r₁, r₂)·(r₁, r₂) = r₁² + r₂²",
          note="(r₁ + r₂)·(r₁ + r₂) is (r₁ + r₂)², not the squared length of the gradient")
def _two_dim(rng):
    p = rng.standard_normal(2)
    r1, r2 = (float(v) for v in jax.grad(_phi, (0, 1))(*p))
    ref = jnp.sum(jnp.stack(jax.grad(_phi, (0, 1))(*p)) ** 2)
    return Values((r1 + r2) * (r1 + r2), ref, r1 * r1 + r2 * r2)


@equation(G, "Gradient descent, general case",
          "Δp = −η∇φ(p) changes φ at the rate −∇φ(p)·∇φ(p) (d/dη of φ(p − η∇φ(p)) at η = 0)")
def _descent(rng):
    p = rng.standard_normal(2)
    grad = jnp.stack(jax.grad(_phi, (0, 1))(*p))
    rate = jax.grad(lambda eta: _phi(*(p - eta * grad)))(0.0)
    return Values(-float(grad @ grad), rate)


def _chain(rng, separate_biases):
    """Gordon's four-neuron linear net; returns weights, biases, x, g and a reference function."""
    w = rng.uniform(-1.5, 1.5, 4)
    b = rng.uniform(-0.5, 0.5, 4) if separate_biases else np.full(4, rng.uniform(-0.5, 0.5))
    x, g = float(rng.uniform(-1, 1)), float(rng.uniform(0, 1))
    a = [x]
    for i in range(4):
        a.append(sig(w[i] * a[-1] + b[i]))

    def cost(w_, b_, offsets):  # c = ½(a₄ − g x)² with an offset added to each activation
        act = x
        for i in range(4):
            act = jax.nn.sigmoid(w_[i] * act + b_[i]) + offsets[i]
        return 0.5 * (act - g) ** 2

    return w, b, x, g, a, cost


def _ref_grads(w, b, cost):
    dw, db, da = jax.grad(cost, (0, 1, 2))(jnp.asarray(w), jnp.asarray(b), jnp.zeros(4))
    return dw, db, da  # da[i] = ∂c/∂a_{i+1}


@equation(G, "Euler-style backpropagation calculation of deltas (summary)",
          "d₄ = D(C(g x))a₄, d_i = d_{i+1} D(f p_{i+1}) a_i, Δp_i = −η d_i D(λv. f v a_{i−1}) p_i",
          note="f w a = σ(w a + b), one fixed shared bias, C u v = ½(u − v)²")
def _euler_summary(rng):
    w, b, x, g, a, cost = _chain(rng, False)
    Df_input = lambda i, v: dsig(w[i - 1] * v + b[0]) * w[i - 1]   # D(f p_i) at v  # noqa: E731
    Df_param = lambda i, v: dsig(w[i - 1] * a[i - 1] + b[0]) * a[i - 1]  # noqa: E731
    d = {4: a[4] - g}
    for i in (3, 2, 1):
        d[i] = d[i + 1] * Df_input(i + 1, a[i])
    dp = [-ETA * d[i] * Df_param(i, None) for i in (1, 2, 3, 4)]
    dw, _, da = _ref_grads(w, b, cost)
    return Values((np.array([d[1], d[2], d[3], d[4]]), np.array(dp)), (da, -ETA * dw))


@equation(G, "Leibniz-style backpropagation calculation of deltas (summary)",
          "d₃ = d₄ D(f p₃) a₃;  d₂ = d₃ D(f p₂) a₂",
          corrected="d₃ = d₄ D(f p₄) a₃;  d₂ = d₃ D(f p₃) a₂ (as in the Euler-style summary)",
          note="layer-index slips; the same table also writes d₄ = D(C(g x)) without a₄")
def _leibniz_summary(rng):
    w, b, x, g, a, cost = _chain(rng, False)
    Df = lambda i, v: dsig(w[i - 1] * v + b[0]) * w[i - 1]  # noqa: E731
    d4 = a[4] - g
    written_d3 = d4 * Df(3, a[3])
    written_d2 = (d4 * Df(4, a[3])) * Df(2, a[2])  # d₃ (the true one) times the slipped factor
    d3 = d4 * Df(4, a[3])
    d2 = d3 * Df(3, a[2])
    _, _, da = _ref_grads(w, b, cost)
    return Values(np.array([written_d3, written_d2]), da[np.array([2, 1])], np.array([d3, d2]))


@equation(G, "One neuron per layer example continued",
          "λv. 1/(1 + exp(−va + b)), the function whose derivative is D(λv. f v a)",
          corrected="λv. 1/(1 + exp(−(va + b))) = λv. σ(va + b)",
          note="a sign slip: as written it is σ(va − b); same for λv. 1/(1+exp(−vw+b))")
def _sign_slip(rng):
    v, a_, b = (float(t) for t in rng.uniform(-1, 1, 3))
    b = b + np.sign(b) * 0.2  # keep b away from 0, where the slip would not show
    written = jax.grad(lambda v_: 1 / (1 + jnp.exp(-v_ * a_ + b)))(v)
    ref = jax.grad(lambda v_: jax.nn.sigmoid(v_ * a_ + b))(v)
    return Values(written, ref, jax.grad(lambda v_: 1 / (1 + jnp.exp(-(v_ * a_ + b))))(v))


@equation(G, "Derivative of the cost function", "D(λv. ½(u − v)²) = λv. v − u")
def _dcost(rng):
    u, v = (float(t) for t in rng.standard_normal(2))
    return Values(v - u, jax.grad(lambda v_: 0.5 * (u - v_) ** 2)(v))


@equation(G, "Derivative of the activation function",
          "D(λv. σ(wv + b)) = λv. σ(wv + b)(1 − σ(wv + b))·w")
def _dact(rng):
    w, v, b = (float(t) for t in rng.standard_normal(3))
    return Values(sig(w * v + b) * (1 - sig(w * v + b)) * w,
                  jax.grad(lambda v_: jax.nn.sigmoid(w * v_ + b))(v))


@equation(G, "Instantiating the pseudocode (shared bias)",
          "d₄ = a₄ − g; Δw₄ = −η d₄ σ'(w₄a₃ + b) a₃; d₃ = d₄ σ'(w₄a₃ + b) w₄; … Δw₁ = −η d₁ σ'(w₁x + b) x")
def _instantiated(rng):
    w, b, x, g, a, cost = _chain(rng, False)
    d = {4: a[4] - g}
    for i in (3, 2, 1):
        d[i] = d[i + 1] * dsig(w[i] * a[i] + b[0]) * w[i]
    dw = [-ETA * d[i] * dsig(w[i - 1] * a[i - 1] + b[0]) * a[i - 1] for i in (1, 2, 3, 4)]
    ref_w, _, da = _ref_grads(w, b, cost)
    return Values((np.array([d[1], d[2], d[3], d[4]]), np.array(dw)), (da, -ETA * ref_w))


@equation(G, "Calculating bias deltas (d_i tables)",
          "d₃ = d₄ σ'(w₄a₃ + b₄) w₄, …;  Δb_i = −η d_i σ'(w_i a_{i−1} + b_i);  "
          "Δw_i = −η d_i σ'(w_i a_{i−1} + b_i) a_{i−1}")
def _bias_d(rng):
    w, b, x, g, a, cost = _chain(rng, True)
    d = {4: a[4] - g}
    for i in (3, 2, 1):
        d[i] = d[i + 1] * dsig(w[i] * a[i] + b[i]) * w[i]
    z = {i: w[i - 1] * a[i - 1] + b[i - 1] for i in (1, 2, 3, 4)}
    db = [-ETA * d[i] * dsig(z[i]) for i in (1, 2, 3, 4)]
    dw = [-ETA * d[i] * dsig(z[i]) * a[i - 1] for i in (1, 2, 3, 4)]
    ref_w, ref_b, _ = _ref_grads(w, b, cost)
    return Values((np.array(db), np.array(dw)), (-ETA * ref_b, -ETA * ref_w))


@equation(G, "Calculating bias deltas (δ_i summary table)",
          "δ₃ = δ₄ σ'(w₄a₃ + b₄) w₄;  δ₂ = δ₃ σ'(w₃a₂ + b₃) w₃;  δ₁ = δ₂ σ'(w₂a₁ + b₂) w₂",
          corrected="δ_i = δ_{i+1} σ'(w_i a_{i−1} + b_i) w_{i+1} (δ₃ = δ₄ σ'(w₃a₂ + b₃) w₄, as in "
                    "the vectorised-pseudocode comparison)",
          note="with δ_i = d_i σ'(w_i a_{i−1} + b_i) = ∂c/∂b_i the σ' must be layer i's own")
def _delta_table(rng):
    w, b, x, g, a, cost = _chain(rng, True)
    z = {i: w[i - 1] * a[i - 1] + b[i - 1] for i in (1, 2, 3, 4)}
    d4 = (a[4] - g) * dsig(z[4])
    written, corrected = {4: d4}, {4: d4}
    for i in (3, 2, 1):
        written[i] = written[i + 1] * dsig(z[i + 1]) * w[i]
        corrected[i] = corrected[i + 1] * dsig(z[i]) * w[i]
    _, ref_b, _ = _ref_grads(w, b, cost)  # ∂c/∂b_i = δ_i
    order = (1, 2, 3, 4)
    return Values(np.array([written[i] for i in order]), ref_b,
                  np.array([corrected[i] for i in order]))


def _net(rng, sizes):
    Ws = [rng.standard_normal((m, n)) for n, m in zip(sizes[:-1], sizes[1:])]
    bs = [rng.standard_normal(m) for m in sizes[1:]]
    x, y = rng.standard_normal(sizes[0]), rng.uniform(size=sizes[-1])

    def cost(Ws_, bs_, offsets):
        a = x
        for W, b, off in zip(Ws_, bs_, offsets):
            a = jax.nn.sigmoid(W @ a + b) + off
        return 0.5 * jnp.sum((y - a) ** 2)

    zs, acts = [], [x]
    for W, b in zip(Ws, bs):
        zs.append(W @ acts[-1] + b)
        acts.append(sig(zs[-1]))
    offsets = [jnp.zeros(m) for m in sizes[1:]]
    dW, db, da = jax.grad(cost, (0, 1, 2))([jnp.asarray(W) for W in Ws],
                                           [jnp.asarray(b) for b in bs], offsets)
    return Ws, bs, x, y, zs, acts, dW, db, da


@equation(G, "Two neuron per layer example, partial derivatives",
          "∂c/∂a_j⁴ = a_j⁴ − y_j;  δ_j⁴ = (a_j⁴ − y_j) σ'(z_j⁴);  ∂c/∂w_jk⁴ = δ_j⁴ a_k³;  ∂c/∂b_j⁴ = δ_j⁴")
def _two_neuron_last(rng):
    Ws, bs, x, y, zs, acts, dW, db, da = _net(rng, (2, 2, 2, 2, 2))
    delta4 = (acts[4] - y) * dsig(zs[3])
    return Values((acts[4] - y, np.outer(delta4, acts[3]), delta4), (da[3], dW[3], db[3]))


@equation(G, "Two neuron per layer example, activations (general pattern)",
          "a₁ˡ = w₁₁ˡ a₁⁽ˡ⁻¹⁾ + w₁₂ˡ a₂⁽ˡ⁻¹⁾ + b₁ˡ  (beside [a₁ˡ; a₂ˡ] = σ(wˡ a⁽ˡ⁻¹⁾ + bˡ))",
          corrected="a₁ˡ = σ(w₁₁ˡ a₁⁽ˡ⁻¹⁾ + w₁₂ˡ a₂⁽ˡ⁻¹⁾ + b₁ˡ)",
          note="the scalar form drops σ; checked as the layer output that gives ∂c/∂b = δ")
def _general_pattern(rng):
    Ws, bs, x, y, zs, acts, dW, db, da = _net(rng, (2, 2, 2))
    written = Ws[1] @ acts[1] + bs[1]         # a² without σ
    ref = jax.nn.sigmoid(jnp.asarray(Ws[1]) @ acts[1] + bs[1])  # the layer's actual output
    return Values(written, ref, sig(Ws[1] @ acts[1] + bs[1]))


@equation(G, "Two neuron per layer example, partial derivatives (after ∂z/∂w)",
          "if i ≠ j then ∂z_j⁴/∂w_jk⁴ = 0",
          corrected="if i ≠ j then ∂z_i⁴/∂w_jk⁴ = 0 (and ∂z_j⁴/∂w_jk⁴ = a_k³)",
          note="index slip: as written it contradicts the line before; layer 3 is written right")
def _index_slip(rng):
    W, b, a3 = rng.standard_normal((2, 2)), rng.standard_normal(2), rng.standard_normal(2)
    jac = jax.jacobian(lambda W_: W_ @ a3 + b)(jnp.asarray(W))  # jac[i, j, k] = ∂z_i/∂w_jk
    i, j, k = 1, 0, 1
    # The text states ∂z_j/∂w_jk = a_k and then ∂z_j/∂w_jk = 0: both are claims about ∂z_j/∂w_jk.
    return Values(np.array([a3[k], 0.0]), jnp.stack([jac[j, j, k], jac[j, j, k]]),
                  corrected=np.array([a3[k], 0.0]),
                  corrected_reference=jnp.stack([jac[j, j, k], jac[i, j, k]]))


@equation(G, "Two neuron per layer example, partial derivatives (many neurons)",
          "∂c/∂w_jkˡ = Σ_i ∂c/∂a_iˡ · ∂a_iˡ/∂w_jkˡ",
          note="sigmoid layers 3-4-2; the sum is taken over every neuron i of a layer through "
               "which c depends on w_jkˡ: the output layer, as in the two-neuron example before it "
               "(every term nonzero), and layer l itself (∂a_iˡ/∂w_jkˡ = 0 for i ≠ j, not "
               "assumed: all terms are evaluated)")
def _sum_rule(rng):
    Ws, bs, x, y, zs, acts, dW, db, da = _net(rng, (3, 4, 2))
    l, j, k = 0, 1, 2  # w_jk of the first layer
    Wj = [jnp.asarray(W) for W in Ws]

    def layer_from(l0, a):  # the activations of every layer after l0, from a = a^{l0}
        out = [a]
        for W, b in zip(Wj[l0 + 1:], bs[l0 + 1:]):
            out.append(jax.nn.sigmoid(W @ out[-1] + b))
        return out

    def acts_of(W_l):  # (a^l, a^L) as functions of the weights of layer l
        a_l = jax.nn.sigmoid(W_l @ acts[l] + bs[l])
        return a_l, layer_from(l, a_l)[-1]

    da_l_dw, da_L_dw = jax.jacobian(acts_of)(Wj[l])  # [i, j', k'] = ∂a_i/∂w_j'k'
    dc_da_L = acts[-1] - y                           # ∂c/∂a_i^L for c = ½‖y − a^L‖²
    over_output = float(dc_da_L @ np.asarray(da_L_dw)[:, j, k])
    over_own = float(np.asarray(da[l]) @ np.asarray(da_l_dw)[:, j, k])
    return Values(np.array([over_output, over_own]), jnp.stack([dW[l][j, k], dW[l][j, k]]))


@equation(G, "Summary and vectorisation: BP1–BP4",
          "δᴸ = ∇_a c ⊙ σ'(zᴸ);  δˡ = ((wˡ⁺¹)ᵀ δˡ⁺¹) ⊙ σ'(zˡ);  ∂c/∂b_jˡ = δ_jˡ;  ∂c/∂w_jkˡ = a_kˡ⁻¹ δ_jˡ",
          note="four sigmoid layers of two neurons, C = ½‖y − a‖²")
def _bp(rng):
    Ws, bs, x, y, zs, acts, dW, db, da = _net(rng, (2, 2, 2, 2, 2))
    L = len(Ws)
    deltas = [None] * L
    deltas[L - 1] = (acts[L] - y) * dsig(zs[L - 1])
    for l in range(L - 2, -1, -1):
        deltas[l] = (Ws[l + 1].T @ deltas[l + 1]) * dsig(zs[l])
    return Values(([np.outer(deltas[l], acts[l]) for l in range(L)], deltas), (dW, db))


@equation(G, "Generalising to many neurons per layer: vectorised pseudocode",
          "δᴸ = (aᴸ − y) ⊙ σ'(wᴸaᴸ⁻¹ + bᴸ); δˡ = ((wˡ⁺¹)ᵀδˡ⁺¹) ⊙ σ'(wˡaˡ⁻¹ + bˡ); "
          "Δw_jkˡ = −η δ_jˡ a_kˡ⁻¹; Δb_jˡ = −η δ_jˡ",
          note="checked on layers of different widths 3-5-4-2, which the text leaves to the reader")
def _vectorised(rng):
    Ws, bs, x, y, zs, acts, dW, db, da = _net(rng, (3, 5, 4, 2))
    L = len(Ws)
    deltas = [None] * L
    deltas[L - 1] = (acts[L] - y) * dsig(Ws[L - 1] @ acts[L - 1] + bs[L - 1])
    for l in range(L - 2, -1, -1):
        deltas[l] = (Ws[l + 1].T @ deltas[l + 1]) * dsig(Ws[l] @ acts[l] + bs[l])
    written = ([-ETA * np.outer(deltas[l], acts[l]) for l in range(L)],
               [-ETA * deltas[l] for l in range(L)])
    return Values(written, ([-ETA * g for g in dW], [-ETA * g for g in db]))


@equation(G, "Machine learning as function approximation: offline learning",
          "p_n = p₀ + (1/n) Σ_i Δp_i, with Δp_i = −η ∇C(g x_i)(f p₀ x_i): one step on the mean cost",
          note="the averaged per-example deltas equal −η times the gradient of the batch-mean cost")
def _offline(rng):
    n = 5
    W, b = rng.standard_normal((2, 3)), rng.standard_normal(2)
    X, Y = rng.standard_normal((n, 3)), rng.uniform(size=(n, 2))

    def cost(W_, b_, x, y):
        return 0.5 * jnp.sum((y - jax.nn.sigmoid(W_ @ x + b_)) ** 2)

    per_example = [jax.grad(cost, (0, 1))(W, b, X[i], Y[i]) for i in range(n)]
    averaged = tuple(sum(-ETA * g[k] for g in per_example) / n for k in (0, 1))
    mean_cost = lambda W_, b_: jnp.mean(jax.vmap(cost, (None, None, 0, 0))(W_, b_, X, Y))  # noqa: E731
    return Values(averaged, tuple(-ETA * g for g in jax.grad(mean_cost, (0, 1))(W, b)))
