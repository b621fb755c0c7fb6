"""One command that measures a GPU: every row the accelerator issues ask for, a JSON file and a
markdown table.

Rows (each with its target; a row that cannot run says why instead of a number):

* ``ceiling``: the device's measured rates — copy bandwidth, float32 matmul at the default
  precision (TF32 on Ampere/Hopper), at "highest", and bfloat16.
* ``mlp``: a large MLP's hand-written training step in float32 (default precision) and bfloat16,
  its FLOPs (XLA's count) per second over the matching measured ceiling (target ≥ 95%).
* ``lstm``: the LSTM step at B1024/T40/H512 and B256/T40/H128 against PyTorch's (cuDNN on a GPU)
  when ``torch`` is importable: PyTorch time / ours (target ≥ 1).
* ``recurrent``: the RNN and GRU gradients, hand-written vs ``jax.grad`` (target ≥ 1).
* ``gpt2``: GPT-2 small's step in bfloat16, hand-written vs ``jax.grad``, with model FLOP
  utilisation against the measured bf16 matmul rate (target MFU ≥ 50%; ``scripts/gpt2_step.py``).
* ``digits``: the warm epoch of the default job, ``fb.train("mlp", "digits")`` (target ≤ 1 ms).
* ``check``: the wall time of ``fbackprop check`` in a fresh process with a warm compilation cache.

Every timing alternates the two sides call by call after warm-up and takes medians
(``bench_mlp.time_pair``). On a GPU the whole report is meant to finish in about 8 minutes.

Run:  python scripts/gpu_report.py [--out DIR] [--only mlp,gpt2,...]
      python scripts/gpu_report.py --smoke      (tiny sizes on any device: what the tests run)
Writes DIR/gpu_report.json and DIR/gpu_report.md (default DIR: reports/) and prints the table.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import gpt2_step  # noqa: E402  (scripts/ is not a package)
from bench_mlp import time_pair  # noqa: E402
from bench_peers import torch_recurrent_step  # noqa: E402
from roofline import median_time as _median  # noqa: E402

import fbackprop as fb  # noqa: E402

COST = "softmax_cross_entropy"

FULL = {
    "matmul_n": 8192, "copy_mib": 1024, "repeats": 20,
    "mlp": ((8192, 8192, 8192, 8192, 10), 8192),
    "lstm": [(1024, 40, 32, 512), (256, 40, 32, 128)],  # (batch, T, n_in, H)
    "recurrent": [("rnn", 256, 100, 32, 512), ("gru", 256, 100, 32, 512)],
    "gpt2": {"shape": gpt2_step.GPT2_SMALL, "batch": 8, "seq_len": 1024},
    "digits_epochs": 6, "check_args": [], "check_runs": 2,
}
SMOKE = {
    "matmul_n": 256, "copy_mib": 4, "repeats": 3,
    "mlp": ((32, 64, 10), 16),
    "lstm": [(8, 5, 4, 8)],
    "recurrent": [("rnn", 4, 5, 3, 8), ("gru", 4, 5, 3, 8)],
    "gpt2": {"shape": gpt2_step.SMOKE, "batch": 2, "seq_len": 16},
    "digits_epochs": 2, "check_runs": 1,
    "check_args": ["--model", "mlp", "--dtype", "float64", "--cost", "mse"],
}


def median_time(f, *args, repeats: int) -> float:
    """Median seconds of ``f(*args)`` after two warm-up calls (roofline.py's timer)."""
    return _median(f, *args, repeats=repeats, warmup=2)


def row(name, value, unit, target=None, met=None, note=""):
    """One line of the report."""
    return {"row": name, "value": value, "unit": unit, "target": target, "met": met,
            "note": note}


def ceilings(cfg) -> tuple[list, dict]:
    """Measured copy bandwidth and matmul rates; also returned as a dict for the other rows."""
    n, reps = cfg["matmul_n"], cfg["repeats"]
    big = jnp.ones((cfg["copy_mib"] * 2 ** 18,), jnp.float32)
    bandwidth = 2 * big.nbytes / median_time(jax.jit(lambda x: x * 1.0001), big, repeats=reps)
    rates = {"bandwidth": bandwidth}
    for label, dtype, precision in (("float32", jnp.float32, "default"),
                                    ("float32_highest", jnp.float32, "highest"),
                                    ("bfloat16", jnp.bfloat16, "default")):
        a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
        with jax.default_matmul_precision(precision):
            mm = jax.jit(lambda a: a @ a)
            rates[label] = 2 * n ** 3 / median_time(mm, a, repeats=reps)
    rows = [row("ceiling: copy bandwidth", bandwidth / 1e9, "GB/s"),
            row(f"ceiling: float32 matmul {n}² (default precision)", rates["float32"] / 1e12,
                "TFLOP/s", note="TF32 on Ampere/Hopper"),
            row(f"ceiling: float32 matmul {n}² (highest)", rates["float32_highest"] / 1e12,
                "TFLOP/s"),
            row(f"ceiling: bfloat16 matmul {n}²", rates["bfloat16"] / 1e12, "TFLOP/s")]
    return rows, rates


def sgd_step(net, x, y, dtype=jnp.float32, lr=1e-3):
    """A jitted hand-written training step (gradient, then SGD) of ``net`` in ``dtype``."""
    grad = fb.manual_grad(net, COST)

    @jax.jit
    def step(params):
        g = grad(fb.astype(params, dtype), x, y)
        return jax.tree.map(lambda p, d: p - lr * d.astype(p.dtype), params, g)
    return step


def flops_of(f, *args) -> float:
    """XLA's FLOP count of ``f`` compiled for ``args``."""
    analysis = jax.jit(f).lower(*args).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis.get("flops", 0.0))


def mlp_rows(cfg, rates) -> list:
    """The large MLP's step in float32 and bfloat16 against the matching matmul ceiling."""
    sizes, batch = cfg["mlp"]
    net = fb.mlp(sizes, "relu", "identity")
    params = net.init(jax.random.PRNGKey(0))
    out = []
    for label, dtype, ceiling in (("float32", jnp.float32, rates["float32"]),
                                  ("bfloat16", jnp.bfloat16, rates["bfloat16"])):
        x = jax.random.normal(jax.random.PRNGKey(1), (batch, sizes[0]), dtype)
        y = jax.nn.one_hot(jax.random.randint(jax.random.PRNGKey(2), (batch,), 0, sizes[-1]),
                           sizes[-1], dtype=dtype)
        step = sgd_step(net, x, y, dtype)
        seconds = median_time(step, params, repeats=cfg["repeats"])
        share = flops_of(step, params) / seconds / ceiling
        out.append(row(f"mlp {'-'.join(map(str, sizes))} B{batch} step, {label}", 100 * share,
                       "% of matmul ceiling", "≥ 95", share >= 0.95,
                       f"{seconds * 1e3:.2f} ms"))
    return out


def lstm_rows(cfg) -> list:
    """The LSTM step against PyTorch's (cuDNN on a GPU), when torch is importable."""
    try:
        import torch
    except ImportError:
        return [row(f"lstm B{b} T{t} H{h} vs PyTorch", None, "ratio", "≥ 1", None,
                    "not measured: torch is not importable") for b, t, _, h in cfg["lstm"]]
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    out = []
    for b, t, n_in, h in cfg["lstm"]:
        net = fb.lstm(n_in, h, 10)
        x = jax.random.normal(jax.random.PRNGKey(1), (b, t, n_in))
        y = jax.nn.one_hot(jax.random.randint(jax.random.PRNGKey(2), (b,), 0, 10), 10)
        step, params = sgd_step(net, x, y), net.init(jax.random.PRNGKey(0))
        ours = median_time(step, params, repeats=cfg["repeats"])
        theirs = median_time(torch_recurrent_step(torch, dev, "LSTM", b, t, n_in, h),
                             repeats=cfg["repeats"])
        out.append(row(f"lstm B{b} T{t} H{h} step vs torch ({dev})", theirs / ours, "ratio",
                       "≥ 1", theirs / ours >= 1, f"ours {ours * 1e3:.2f} ms, torch "
                       f"{theirs * 1e3:.2f} ms"))
    return out


def recurrent_rows(cfg) -> list:
    """RNN and GRU gradients, hand-written vs jax.grad (ratio = jax.grad time / ours)."""
    out = []
    for model, b, t, n_in, h in cfg["recurrent"]:
        net = getattr(fb, model)(n_in, h, 10)
        params = net.init(jax.random.PRNGKey(0))
        x = jax.random.normal(jax.random.PRNGKey(1), (b, t, n_in))
        y = jax.nn.one_hot(jax.random.randint(jax.random.PRNGKey(2), (b,), 0, 10), 10)
        ours, theirs = time_pair(jax.jit(fb.manual_grad(net, COST)),
                                 jax.jit(jax.grad(fb.loss_fn(net, COST))), (params, x, y),
                                 cfg["repeats"])
        out.append(row(f"{model} B{b} T{t} H{h} gradient vs jax.grad", theirs / ours, "ratio",
                       "≥ 1", theirs / ours >= 1, f"ours {ours * 1e3:.2f} ms"))
    return out


def gpt2_rows(cfg, rates) -> list:
    """GPT-2 small's bf16 step, hand-written vs jax.grad, and its MFU."""
    g = cfg["gpt2"]
    r = gpt2_step.run(g["shape"], g["seq_len"], compare=True, repeats=cfg["repeats"],
                      slice_len=min(32, g["seq_len"]), peak_tflops=rates["bfloat16"] / 1e12,
                      batch=g["batch"])
    ratio = r["autodiff"]["step_s"] / r["manual"]["step_s"]
    mfu = r["manual"]["mfu"]
    label = f"gpt2 {r['params'] / 1e6:.0f}M B{g['batch']} T{g['seq_len']} bf16 step"
    return [row(f"{label}: MFU", 100 * mfu, "% of bf16 matmul ceiling", "≥ 50", mfu >= 0.5,
                f"{r['manual']['step_s'] * 1e3:.1f} ms"),
            row(f"{label}: vs jax.grad", ratio, "ratio", "≥ 1", ratio >= 1,
                f"slice float64 error {r['check']['float64_rel_error']:.1e}")]


def digits_rows(cfg) -> list:
    """The default job's warm epoch time (median over the epochs after the first)."""
    result = fb.train("mlp", "digits", epochs=cfg["digits_epochs"], progress=False)
    seconds = float(np.median([h["seconds"] for h in result.history[1:]]))
    return [row("digits epoch (fb.train mlp digits, warm)", seconds * 1e3, "ms", "≤ 1",
                seconds <= 1e-3, f"test accuracy {100 * result.history[-1]['test_accuracy']:.1f}%")]


def check_rows(cfg) -> list:
    """``fbackprop check`` in fresh processes sharing one compilation cache: the first run fills
    it (cold), the last is timed warm (``check_runs`` 1: the cold run only)."""
    args = [sys.executable, "-m", "fbackprop", "check", *cfg["check_args"]]
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "FBACKPROP_CACHE_DIR": cache}
        times = []
        for _ in range(cfg["check_runs"]):
            t0 = time.perf_counter()
            proc = subprocess.run(args, env=env, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
    warm = len(times) > 1
    return [row("fbackprop check " + " ".join(cfg["check_args"])
                + (" (warm cache)" if warm else " (cold cache)"), times[-1], "s", None,
                proc.returncode == 0, (f"cold {times[0]:.1f} s, " if warm else "")
                + f"exit {proc.returncode}")]


SECTIONS = {"mlp": mlp_rows, "lstm": lstm_rows, "recurrent": recurrent_rows, "gpt2": gpt2_rows,
            "digits": digits_rows, "check": check_rows}


def report(cfg, only=()) -> dict:
    """Run every section (or those in ``only``); a section that fails becomes one row saying so."""
    ceiling_rows, rates = ceilings(cfg)
    rows = list(ceiling_rows)
    for name, section in SECTIONS.items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        try:
            args = (cfg, rates) if name in ("mlp", "gpt2") else (cfg,)
            new = section(*args)
        except Exception as e:  # a report row, not a crash: the other rows still run
            traceback.print_exc()
            new = [row(name, None, "", None, False, f"failed: {type(e).__name__}: {e}"[:200])]
        for r in new:
            r["section_s"] = round(time.perf_counter() - t0, 1)
        rows += new
    dev = jax.devices()[0]
    return {"device": str(dev), "device_kind": dev.device_kind, "platform": dev.platform,
            "jax": jax.__version__, "python": platform.python_version(), "rows": rows}


def markdown(rep: dict) -> str:
    """The report as a markdown table."""
    lines = [f"{rep['device_kind']} ({rep['platform']}), jax {rep['jax']}, python "
             f"{rep['python']}", "", "| row | value | unit | target | met | note |",
             "| --- | ---: | --- | --- | --- | --- |"]
    for r in rep["rows"]:
        value = "not measured" if r["value"] is None else f"{r['value']:.3g}"
        met = {True: "yes", False: "NO", None: ""}[r["met"]]
        lines.append(f"| {r['row']} | {value} | {r['unit']} | {r['target'] or ''} | {met} | "
                     f"{r['note']} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="reports", help="folder for gpu_report.json and .md")
    ap.add_argument("--only", default="", help="comma-separated sections: " + ",".join(SECTIONS))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (what the tests run)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rep = report(SMOKE if args.smoke else FULL, {s for s in args.only.split(",") if s})
    rep["seconds"] = round(time.perf_counter() - t0, 1)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_report.json").write_text(json.dumps(rep, indent=1))
    table = markdown(rep)
    (out / "gpu_report.md").write_text(table + "\n")
    print(table)
    print(f"\n{rep['seconds']} s; written to {out}/gpu_report.json and .md")
    return rep


if __name__ == "__main__":
    main()
