"""fbackprop against its peers, timed in one run on whatever device is present.

1. **Digits, end to end** (always): ``fb.train("mlp", "digits")`` — hidden width 64, Adam with
   lr 3e-3, batch 32, 20 epochs, hand-written gradients — against scikit-learn's
   ``MLPClassifier`` with the same settings on the same split (CPU). fbackprop is timed cold
   (a fresh process, so imports and compilation count; with the persistent compilation cache
   empty, then filled) and warm (a second ``fb.train`` call in one process), end to end and per
   epoch; each side's test accuracy is printed beside its time.
2. **PyTorch** (only when ``torch`` is importable, as on the GPU machine): a PyTorch eager
   per-step loop for the same digits MLP; and one training step (forward, backward, optimizer)
   of cuDNN's ``nn.LSTM``, ``nn.RNN``, ``nn.GRU`` and ``nn.Conv2d`` against fbackprop's
   hand-written step at the same sizes, medians of alternated calls.

Ratios are peer time / fbackprop time (> 1: fbackprop is faster). Prints a table, writes JSON.
Run:  python scripts/bench_peers.py [--repeats N] [--json-out PATH] [--skip-cold]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

import fbackprop as fb

DIGITS = dict(hidden=(64,), lr=3e-3, batch_size=32, epochs=20, seed=0)


def _accuracy(history):
    return history[-1]["test_accuracy"]


def fbackprop_warm(repeats: int):
    """``fb.train`` called repeatedly in one process: (median seconds end to end, median epoch
    seconds, test accuracy). The first call (which compiles) is not counted."""
    fb.train("mlp", "digits", **DIGITS)
    ends, epochs, acc = [], [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fb.train("mlp", "digits", **DIGITS)
        ends.append(time.perf_counter() - t0)
        epochs.append(statistics.median(r["seconds"] for r in result.history))
        acc = _accuracy(result.history)
    return statistics.median(ends), statistics.median(epochs), acc


_COLD = ("import time; t0 = time.perf_counter()\n"
         "import fbackprop as fb\n"
         "from fbackprop.jax_cache import enable_compilation_cache\n"
         "enable_compilation_cache()\n"
         "r = fb.train('mlp', 'digits', hidden=(64,), lr=3e-3, batch_size=32, epochs=20, seed=0)\n"
         "print(time.perf_counter() - t0, r.history[-1]['test_accuracy'])\n")


def fbackprop_cold():
    """A fresh Python process running the default job: (seconds with an empty compilation
    cache, seconds with the cache filled by that first run, accuracy)."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "FBACKPROP_CACHE_DIR": cache}
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        out = []
        for _ in range(2):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", _COLD], env=env, capture_output=True,
                                  text=True, check=True)
            wall = time.perf_counter() - t0  # interpreter start and imports included
            out.append((wall, float(proc.stdout.split()[1])))
    return out[0][0], out[1][0], out[1][1]


def sklearn_digits(repeats: int):
    """scikit-learn's MLPClassifier with the same settings: (median fit seconds, accuracy)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    ds = fb.data.load("digits")
    times, acc = [], None
    for _ in range(repeats):
        clf = MLPClassifier(hidden_layer_sizes=DIGITS["hidden"], solver="adam",
                            learning_rate_init=DIGITS["lr"], batch_size=DIGITS["batch_size"],
                            max_iter=DIGITS["epochs"], shuffle=True, random_state=0, tol=0.0,
                            n_iter_no_change=DIGITS["epochs"] + 1, alpha=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t0 = time.perf_counter()
            clf.fit(ds.x_train.reshape(len(ds.x_train), -1), ds.y_train)
            times.append(time.perf_counter() - t0)
        acc = float(np.mean(clf.predict(ds.x_test.reshape(len(ds.x_test), -1)) == ds.y_test))
    return statistics.median(times), acc


# --- PyTorch (optional) ---------------------------------------------------------------------

RECURRENT = [  # (name, torch module, fbackprop constructor, batch, T, n_in, H)
    ("LSTM", "LSTM", fb.lstm, 1024, 40, 32, 512),
    ("LSTM", "LSTM", fb.lstm, 256, 40, 32, 128),
    ("RNN", "RNN", fb.rnn, 1024, 40, 32, 512),
]


def _fb_step(net, x, y, lr=1e-3):
    """One jitted hand-written training step (gradient and SGD update) of ``net``."""
    grad = fb.manual_grad(net, "softmax_cross_entropy")

    @jax.jit
    def step(params):
        g = grad(params, x, y)
        return jax.tree.map(lambda p, d: p - lr * d, params, g)

    return step


def _time_alternated(f, g, repeats):
    f(), g()  # warm-up (compilation)
    tf, tg = [], []
    for _ in range(repeats):
        for fn, acc in ((f, tf), (g, tg)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return statistics.median(tf), statistics.median(tg)


def torch_recurrent_step(torch, dev, module, B, T, n_in, H):
    """A PyTorch training step (SGD) of ``torch.nn.<module>`` (LSTM, RNN, GRU: cuDNN on a GPU)
    with a linear head on the last step, synchronised, as a function of no arguments."""
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    rnn = getattr(torch.nn, module)(n_in, H, batch_first=True).to(dev)
    head = torch.nn.Linear(H, 10).to(dev)
    opt = torch.optim.SGD(list(rnn.parameters()) + list(head.parameters()), lr=1e-3)
    xt = torch.randn(B, T, n_in, device=dev)
    yt = torch.randint(0, 10, (B,), device=dev)

    def torch_step():
        opt.zero_grad()
        out, _ = rnn(xt)
        loss = torch.nn.functional.cross_entropy(head(out[:, -1]), yt)
        loss.backward()
        opt.step()
        sync()
    return torch_step


def _fb_runner(ctor, B, T, n_in, H):
    """fbackprop's step of the same shape, updating its parameters in place of a holder."""
    net = ctor(n_in, H, 10)
    x = jax.random.normal(jax.random.PRNGKey(1), (B, T, n_in))
    y = jax.nn.one_hot(jax.random.randint(jax.random.PRNGKey(2), (B,), 0, 10), 10)
    step = _fb_step(net, x, y)
    state = {"p": net.init(jax.random.PRNGKey(0))}

    def fb_step():
        state["p"] = step(state["p"])
        jax.block_until_ready(state["p"])
    return fb_step


def torch_rows(repeats: int):
    """PyTorch's recurrent and convolutional training steps against fbackprop's."""
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for name, module, ctor, B, T, n_in, H in RECURRENT + [("GRU", "GRU", getattr(fb, "gru", None),
                                                           1024, 40, 32, 512)]:
        if ctor is None:
            continue
        t_fb, t_torch = _time_alternated(_fb_runner(ctor, B, T, n_in, H),
                                         torch_recurrent_step(torch, dev, module, B, T, n_in, H),
                                         repeats)
        rows.append({"case": f"{name} step B{B} T{T} n_in{n_in} H{H}", "fbackprop_ms": t_fb * 1e3,
                     "peer": f"torch {module} ({dev})", "peer_ms": t_torch * 1e3,
                     "ratio": t_torch / t_fb})
    return rows


def torch_digits_loop(repeats: int):
    """A PyTorch eager per-step loop for the digits MLP: median epoch seconds."""
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    ds = fb.data.load("digits")
    x = torch.tensor(ds.x_train, dtype=torch.float32, device=dev)
    y = torch.tensor(ds.y_train, dtype=torch.long, device=dev)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 10)).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=DIGITS["lr"])
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        perm = torch.randperm(len(x), device=dev)
        for i in range(0, len(x), DIGITS["batch_size"]):
            idx = perm[i:i + DIGITS["batch_size"]]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        if dev == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed repetitions per case")
    ap.add_argument("--json-out", type=pathlib.Path, default=pathlib.Path("bench_peers.json"))
    ap.add_argument("--skip-cold", action="store_true", help="skip the fresh-process runs")
    args = ap.parse_args(argv)

    device = f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}"
    rows = []
    warm, warm_epoch, fb_acc = fbackprop_warm(args.repeats)
    sk, sk_acc = sklearn_digits(args.repeats)
    rows.append({"case": "digits MLP 64, 20 epochs, end to end (warm process)",
                 "fbackprop_ms": warm * 1e3, "fbackprop_acc": fb_acc,
                 "peer": "scikit-learn MLPClassifier (CPU)", "peer_ms": sk * 1e3,
                 "peer_acc": sk_acc, "ratio": sk / warm})
    rows.append({"case": "digits MLP 64, one epoch (warm)", "fbackprop_ms": warm_epoch * 1e3,
                 "peer": "scikit-learn, one epoch", "peer_ms": sk / DIGITS["epochs"] * 1e3,
                 "ratio": sk / DIGITS["epochs"] / warm_epoch})
    if not args.skip_cold:
        cold, cached, acc = fbackprop_cold()
        for label, t in (("cold: new process, empty compilation cache", cold),
                         ("cold: new process, compilation cache filled", cached)):
            rows.append({"case": f"digits end to end, {label}", "fbackprop_ms": t * 1e3,
                         "fbackprop_acc": acc, "peer": "scikit-learn (fit only)",
                         "peer_ms": sk * 1e3, "ratio": sk / t})
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
    if have_torch:
        loop = torch_digits_loop(args.repeats)
        rows.append({"case": "digits MLP, one epoch", "fbackprop_ms": warm_epoch * 1e3,
                     "peer": "PyTorch eager per-step loop", "peer_ms": loop * 1e3,
                     "ratio": loop / warm_epoch})
        rows += torch_rows(max(args.repeats, 20))

    result = {"device": device, "jax": jax.__version__, "python": platform.python_version(),
              "torch": have_torch, "rows": rows}
    args.json_out.write_text(json.dumps(result, indent=1))
    print(f"device {device}, jax {jax.__version__}; ratio = peer time / fbackprop time"
          + ("" if have_torch else "; torch not importable: PyTorch rows skipped"))
    print(f"{'case':58} {'fbackprop ms':>12} {'acc':>6}  {'peer':34} {'peer ms':>9} "
          f"{'acc':>6} {'ratio':>6}")
    for r in rows:
        acc = f"{r['fbackprop_acc']:.3f}" if "fbackprop_acc" in r else ""
        pacc = f"{r['peer_acc']:.3f}" if "peer_acc" in r else ""
        print(f"{r['case']:58} {r['fbackprop_ms']:12.1f} {acc:>6}  {r['peer']:34} "
              f"{r['peer_ms']:9.1f} {pacc:>6} {r['ratio']:6.2f}")
    print(f"JSON: {args.json_out}")


if __name__ == "__main__":
    main()
