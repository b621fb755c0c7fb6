"""The built-in configurations that ``fbackprop check`` verifies, and the summary line it prints
for each. Used by the command; the gradient checker itself is :mod:`fbackprop.gradcheck`."""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

from .gradcheck import check, precision_for, sample_point
from .gradcheck.report import FAIL, HAND_AUTO, PASS, GradientReport
from .layers import dense, layer_norm, residual
from .models import cnn, gru, lstm, mlp, rnn, transformer
from .network import dag

__all__ = ["Config", "builtin_configs", "model_configs", "check_configs", "summary_row"]


class Config(NamedTuple):
    """One built-in configuration checked by ``fbackprop check``."""

    model: str          # family, e.g. "mlp"
    label: str          # architecture, e.g. "mlp(5-7-4-3, tanh/identity)"
    activation: str
    cost: str
    make: Callable      # () -> Network
    batch: int = 4
    input_shape: tuple | None = None  # one example's shape when the network's has None (any T)


def builtin_configs() -> list[Config]:
    """Every configuration ``fbackprop check`` runs: MLPs (every activation × every cost, depths
    1–4 with differing widths, bias on and off), then :func:`model_configs`."""
    configs = []
    shapes = [(5, 7, 4, 3), (3, 2), (6, 5, 4, 3, 2)]
    for act in ("sigmoid", "tanh", "relu", "identity"):
        for i, cost in enumerate(("mse", "sse", "sigmoid_cross_entropy", "softmax_cross_entropy",
                                  "logistic")):
            sizes = shapes[i % len(shapes)]
            out = act if cost in ("mse", "sse") else "identity"
            bias = (i + len(act)) % 3 != 0

            def make(sizes=sizes, act=act, out=out, bias=bias):
                return mlp(sizes, act, out, bias=bias)

            configs.append(Config("mlp", make().name, act, cost, make, batch=1 + ((i + 1) % 2) * 4))
    configs.append(Config("mlp", mlp((4, 6, 3), "tanh", "softmax").name, "tanh", "mse",
                          lambda: mlp((4, 6, 3), "tanh", "softmax")))
    return configs + model_configs()


def model_configs():
    """Rows for ``fbackprop check``: CNNs (1-D and 2-D, mean and max pooling, every activation),
    RNNs (every activation), LSTMs and GRUs, with ``output="last"`` and ``"all"``, residual
    DAGs and small transformers, small shapes."""
    rows = []
    cnn_rows = [  # (input_shape, conv_channels, kernel, pool_size, pool, hidden, activation, cost)
        ((2, 12), (3,), 3, 2, "mean", (), "sigmoid", "softmax_cross_entropy"),
        ((1, 14), (2, 3), 3, 2, "max", (4,), "tanh", "mse"),
        ((1, 6, 6), (2,), 3, 2, "mean", (5,), "relu", "sigmoid_cross_entropy"),
        ((2, 7, 8), (3,), (2, 3), (3, 2), "max", (), "identity", "sse"),
    ]
    for shape, chans, k, ps, pool, hidden, act, cost in cnn_rows:
        make = functools.partial(cnn, shape, conv_channels=chans, kernel_size=k, pool_size=ps,
                                 pool=pool, hidden=hidden, n_out=3, activation=act,
                                 output_activation=act if cost in ("mse", "sse") else "identity")
        rows.append(Config("cnn", make().name, act, cost, make, batch=3 if len(shape) == 2 else 2))
    rnn_rows = [  # (model, activation, output, T, cost)
        ("rnn", "tanh", "last", 5, "softmax_cross_entropy"),
        ("rnn", "relu", "all", 3, "logistic"),
        ("rnn", "identity", "last", 1, "sse"),
        ("lstm", None, "last", 5, "softmax_cross_entropy"),
        ("lstm", None, "all", 4, "mse"),
        ("gru", None, "last", 5, "softmax_cross_entropy"),
        ("gru", None, "all", 4, "mse"),
    ]
    for model, act, output, T, cost in rnn_rows:
        def make(model=model, act=act, output=output):
            if model == "rnn":
                return rnn(3, 6, 2, activation=act, output=output)
            if model == "gru":
                return gru(3, 5, 2, output=output)
            return lstm(3, 5, 2, output=output)

        rows.append(Config(model, f"{make().name} T={T}", act or "σ/tanh", cost, make, batch=3,
                           input_shape=(T, 3)))
    for act, cost in (("tanh", "mse"), ("relu", "softmax_cross_entropy")):
        def make(act=act):
            return residual_dag(4, 5, 3, act)

        rows.append(Config("residual", make().name, act, cost, make, batch=3))
    for V, D, H, L, T in ((5, 4, 2, 2, 3),):  # two blocks, two heads; small: it compiles
        def make(V=V, D=D, H=H, L=L, T=T):
            return transformer(V, D, H, L, T, mlp_ratio=2)

        rows.append(Config("transformer", f"{make().name} T={T}", "gelu",
                           "softmax_cross_entropy", make, batch=2, input_shape=(T,)))
    return rows


def residual_dag(n_in: int, width: int, n_out: int, activation: str):
    """x → dense → two residual blocks h + dense(layer_norm(h)) → a linear head: a DAG whose
    hidden activations each feed two nodes."""
    nodes = [("h", dense(n_in, width, activation), ("x",))]
    nodes += residual("r1", layer_norm(width), dense(width, width, activation), input="h")
    nodes += residual("r2", dense(width, width, activation), input="r1")
    nodes += [("out", dense(width, n_out, "identity"), ("r2",))]
    return dag(nodes, "out", input_shape=(n_in,),
               name=f"residual({n_in}→{width}×2→{n_out}, {activation})")


def check_configs(configs, dtypes=("float64", "float32"), *, finite_differences: bool = False,
                  seed: int = 0):
    """Check each :class:`Config` in each dtype at a reproducible sample point;
    yields ``(config, dtype, report)``. Finite differences run in the float64 checks only."""
    for cfg in configs:
        net = cfg.make()
        for dtype in dtypes:
            with precision_for(dtype):
                params, x, y = sample_point(net, cfg.cost, cfg.batch, seed=seed, dtype=dtype,
                                            input_shape=cfg.input_shape)
            yield cfg, dtype, check(net, cfg.cost, params, x, y, dtype=dtype, seed=seed,
                                    finite_differences=finite_differences and dtype == "float64")


def summary_row(cfg, dtype: str, report: GradientReport) -> dict:
    """One line of the ``fbackprop check`` table: the largest hand–autodiff error over every row
    (layers, cost, whole gradient), the largest FD error, the tolerance and the verdict; rows at
    a kink or of FD noise are not counted (the report lists them)."""
    def worst(rows):
        return max((r.max_rel if math.isfinite(r.max_rel) else math.inf for r in rows),
                   default=None)

    judged = [r for r in report.rows if r.status in (PASS, FAIL)]  # not kink or FD-noise rows
    hand_auto = [r for r in judged if r.pair == HAND_AUTO]
    fd_rows = [r for r in judged if r.pair != HAND_AUTO]
    return {"model": cfg.label, "family": cfg.model, "activation": cfg.activation,
            "cost": cfg.cost, "dtype": dtype, "max_rel_error": worst(hand_auto),
            "fd_max_rel_error": worst(fd_rows), "tolerance": report.tolerance,
            "fd_tolerance": report.fd["tolerance"] if report.fd else None,
            "pass": report.ok, "failing_layers": list(report.failing_layers),
            "at_kink": list(report.at_kink)}
