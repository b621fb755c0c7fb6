"""Fleuret, EE-559 "3b. Multi-Layer Perceptrons" (2018): affine collapse of linear MLPs, the
logistic loss and its gradient, gradient descent as a minimised quadratic, back-propagation."""
import jax
import jax.numpy as jnp
import numpy as np

from .core import Values, equation

F = "Fleuret"


@equation(F, "Combining multiple layers (linear σ)",
          "σ(x) = αx + β ⇒ f(x) = A⁽ᴸ⁾x + B⁽ᴸ⁾, A⁽⁰⁾ = I, B⁽⁰⁾ = 0, ∀l < L: A⁽ˡ⁾ = αw⁽ˡ⁾A⁽ˡ⁻¹⁾, "
          "B⁽ˡ⁾ = αw⁽ˡ⁾B⁽ˡ⁻¹⁾ + αb⁽ˡ⁾ + β𝟙",
          corrected="the same recursion for 1 ≤ l ≤ L", debatable=True,
          note="a quantifier: read literally, ∀l < L stops the recursion at A⁽ᴸ⁻¹⁾, B⁽ᴸ⁻¹⁾ "
               "(evaluated so) and leaves A⁽ᴸ⁾, B⁽ᴸ⁾ undefined; the intent, 1 ≤ l ≤ L as in the "
               "∀l = 1, …, L that defines x⁽ˡ⁾ just above, is plain")
def _affine(rng):
    L, n = 3, 3
    alpha, beta = float(rng.uniform(0.5, 1.5)), float(rng.standard_normal())
    ws, bs = [rng.standard_normal((n, n)) for _ in range(L)], [rng.standard_normal(n) for _ in range(L)]
    x = rng.standard_normal(n)

    def recursion(upto):
        A, Bv = np.eye(n), np.zeros(n)
        for w, b in zip(ws[:upto], bs[:upto]):
            A, Bv = alpha * w @ A, alpha * w @ Bv + alpha * b + beta
        return A @ x + Bv

    def mlp(x_):
        for w, b in zip(ws, bs):
            x_ = alpha * (w @ x_ + b) + beta
        return x_

    return Values(recursion(L - 1), mlp(jnp.asarray(x)), recursion(L))


@equation(F, "Training and gradient descent: logistic regression",
          "∂L/∂b = −Σ_n y_n σ(−y_n(w·x_n + b));  ∂L/∂w_d = −Σ_n x_{n,d} y_n σ(−y_n(w·x_n + b))",
          note="L(w, b) = −Σ_n log σ(y_n(w·x_n + b)), y_n ∈ {−1, +1}")
def _logistic(rng):
    n, dim = 7, 3
    X, w, b = rng.standard_normal((n, dim)), rng.standard_normal(dim), float(rng.standard_normal())
    y = np.where(rng.integers(0, 2, n) == 1, 1.0, -1.0)
    loss = lambda w_, b_: -jnp.sum(jax.nn.log_sigmoid(y * (X @ w_ + b_)))  # noqa: E731
    u = y / (1 + np.exp(y * (X @ w + b)))  # y_n σ(−y_n(w·x_n + b))
    return Values((-(X * u[:, None]).sum(0), -u.sum()), jax.grad(loss, (0, 1))(w, b))


@equation(F, "Gradient descent", "∇L̃_w₀(w) = ∇L(w₀) + (w − w₀)/η;  argmin_w L̃_w₀(w) = w₀ − η∇L(w₀)",
          note="L̃_w₀(w) = L(w₀) + ∇L(w₀)ᵀ(w − w₀) + ‖w − w₀‖²/(2η); its Hessian is I/η, so its "
               "argmin is w − η∇L̃(w) from any w")
def _quadratic(rng):
    dim, eta = 4, float(rng.uniform(0.05, 0.5))
    w0, w = rng.standard_normal(dim), rng.standard_normal(dim)
    loss = lambda v: jnp.sum(jnp.sin(v) * v) + jnp.sum(v**4) / 4  # noqa: E731
    g0 = jax.grad(loss)(w0)
    Lt = lambda v: loss(w0) + g0 @ (v - w0) + jnp.sum((v - w0) ** 2) / (2 * eta)  # noqa: E731
    argmin_ref = w - eta * jax.grad(Lt)(w)  # one exact Newton step on the quadratic
    return Values((np.asarray(g0) + (w - w0) / eta, w0 - eta * np.asarray(g0)),
                  (jax.grad(Lt)(w), argmin_ref))


@equation(F, "Back-propagation: the chain rule for Jacobians",
          "J_{f_N∘…∘f_1}(x) = Π_{n=1}^{N} J_{f_n}(f_{n−1}∘…∘f_1(x))",
          corrected="J_{f_N∘…∘f_1}(x) = J_{f_N}(…) J_{f_{N−1}}(…) ⋯ J_{f_1}(x): the factors ordered "
                    "from n = N down to 1", debatable=True,
          note="the ordering of a product: matrix products do not commute and Π fixes no order; "
               "multiplied left to right from n = 1 (evaluated so) the factors are in the wrong "
               "order, while placing each factor left of the ones before it, as in f_N∘…∘f_1, "
               "gives the intended product")
def _jacobian_order(rng):
    n = 3
    Ws = [rng.standard_normal((n, n)) for _ in range(3)]
    fs = [lambda v, W=W: jnp.tanh(W @ v) for W in Ws]
    x = rng.standard_normal(n)
    points, v = [], jnp.asarray(x)
    for f in fs:
        points.append(v)
        v = f(v)
    jacs = [np.asarray(jax.jacobian(f)(p)) for f, p in zip(fs, points)]
    composed = lambda v_: fs[2](fs[1](fs[0](v_)))  # noqa: E731
    return Values(jacs[0] @ jacs[1] @ jacs[2], jax.jacobian(composed)(jnp.asarray(x)),
                  jacs[2] @ jacs[1] @ jacs[0])


@equation(F, "Back-propagation: forward and backward pass",
          "[∂ℓ/∂x⁽ᴸ⁾] = ∇₁ℓ(x⁽ᴸ⁾); [∂ℓ/∂x⁽ˡ⁾] = (w⁽ˡ⁺¹⁾)ᵀ[∂ℓ/∂s⁽ˡ⁺¹⁾]; "
          "[∂ℓ/∂s⁽ˡ⁾] = [∂ℓ/∂x⁽ˡ⁾] ⊙ σ'(s⁽ˡ⁾); [∂ℓ/∂w⁽ˡ⁾] = [∂ℓ/∂s⁽ˡ⁾](x⁽ˡ⁻¹⁾)ᵀ; "
          "[∂ℓ/∂b⁽ˡ⁾] = [∂ℓ/∂s⁽ˡ⁾]",
          note="tanh MLP 3-5-4-2 with ℓ = ‖x⁽ᴸ⁾ − y‖²")
def _backprop(rng):
    sizes = (3, 5, 4, 2)
    ws = [rng.standard_normal((m, n)) for n, m in zip(sizes[:-1], sizes[1:])]
    bs = [rng.standard_normal(m) for m in sizes[1:]]
    x, y = rng.standard_normal(3), rng.standard_normal(2)
    xs, ss = [x], []
    for w, b in zip(ws, bs):
        ss.append(w @ xs[-1] + b)
        xs.append(np.tanh(ss[-1]))
    L = len(ws)
    dx = 2 * (xs[L] - y)
    dws, dbs = [None] * L, [None] * L
    for l in range(L - 1, -1, -1):
        ds = dx * (1 - np.tanh(ss[l]) ** 2)
        dws[l], dbs[l] = np.outer(ds, xs[l]), ds
        dx = ws[l].T @ ds

    def loss(ws_, bs_):
        v = x
        for w, b in zip(ws_, bs_):
            v = jnp.tanh(w @ v + b)
        return jnp.sum((v - y) ** 2)

    return Values((dws, dbs), jax.grad(loss, (0, 1))([jnp.asarray(w) for w in ws],
                                                     [jnp.asarray(b) for b in bs]))
