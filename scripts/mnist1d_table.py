"""MNIST-1D test accuracy with the hand-written gradients, beside Greydanus (2020).

The paper ("Scaling down deep learning", Table 1, the default 4000/1000 split) reports test
accuracies of 32% (logistic regression), 68% (MLP), 94% (CNN) and 91% (GRU); the "gru" row is
the same model family (Cho et al. 2014, hand-written BPTT). Each row here trains
with ``fbackprop.train`` — hand-written gradients, Adam, batch 100, 6000 steps (150 epochs) as in
the paper — and prints the final test accuracy, the best epoch's, and the time the row took.
Models missing from this installation are reported as such. Not part of the test suite.
Run:  python scripts/mnist1d_table.py [--rows linear,mlp,cnn,rnn,rnn8,lstm,gru] [--epochs N]
      [--seed S] [--json]
"""
from __future__ import annotations

import argparse
import json
import time

import fbackprop as fb

# row → (paper's model, paper's accuracy, model, hidden, learning rate, features per step)
# The recurrent models read a signal as one feature per step (40 steps) unless a row says
# otherwise: a plain tanh RNN barely learns over 40 steps (Jin §3.2's vanishing and exploding
# deltas), so "rnn8" feeds it 5 steps of 8 features instead.
ROWS = {
    "linear": ("logistic regression", 0.32, "mlp", (), 1e-2, None),
    "mlp": ("MLP", 0.68, "mlp", (100, 100), 1e-2, None),
    "cnn": ("CNN", 0.94, "cnn", None, 1e-2, None),
    "rnn": ("GRU", 0.91, "rnn", None, 3e-4, None),
    "rnn8": ("GRU", 0.91, "rnn", None, 1e-3, 8),
    "lstm": ("GRU", 0.91, "lstm", None, 3e-3, None),
    "gru": ("GRU", 0.91, "gru", 64, 3e-3, None),
}
# Families the trainer builds by name; others are built here (one feature per step, or `chunk`).
BUILT_HERE = {"gru": fb.gru}


def run_row(name, ds, epochs, seed):
    paper_model, paper, model, hidden, lr, chunk = ROWS[name]
    # recurrent rows read (n, 40) signals as 40 / chunk steps of chunk features (1 unless set)
    features = (chunk or 1) if model in ("rnn", "lstm") else None
    t0 = time.perf_counter()
    if model in BUILT_HERE:  # the trainer reshapes the data to the network's (None, n_in)
        model = BUILT_HERE[model](chunk or 1, hidden, ds.n_classes, output="last")
        hidden = None
    try:
        result = fb.train(model, ds, optimizer="adam", lr=lr, epochs=epochs, batch_size=100,
                          hidden=hidden, seed=seed, features_per_step=features)
    except ValueError as err:
        if "not available in this installation" not in str(err):
            raise
        return {"row": name, "model": str(model), "paper_model": paper_model, "paper": paper,
                "ours": None, "note": str(err)}
    history = result.history
    best = max(history, key=lambda r: r["test_accuracy"])
    return {"row": name, "model": result.net.name, "paper_model": paper_model, "paper": paper,
            "ours": history[-1]["test_accuracy"], "best": best["test_accuracy"],
            "best_epoch": best["epoch"], "train": history[-1]["train_accuracy"],
            "epochs": epochs, "seconds": time.perf_counter() - t0}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default=",".join(ROWS),
                    help=f"comma-separated rows among {', '.join(ROWS)}")
    ap.add_argument("--epochs", type=int, default=150, help="epochs (150 = the paper's 6000 steps)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; choose among {', '.join(ROWS)}")
    ds = fb.data.load("mnist1d")
    results = []
    if not args.json:
        print(f"MNIST-1D, 4000 train / 1000 test, hand-written gradients, Adam, batch 100, "
              f"{args.epochs} epochs, seed {args.seed}")
        print(f"{'row':7} {'paper model':20} {'paper':>6} {'ours':>6} {'best (epoch)':>13} "
              f"{'train':>6} {'seconds':>8}")
    for name in rows:
        r = run_row(name, ds, args.epochs, args.seed)
        results.append(r)
        if args.json:
            continue
        if r["ours"] is None:
            print(f"{name:7} {r['paper_model']:20} {r['paper']:6.0%} {'—':>6}  {r['note']}")
        else:
            print(f"{name:7} {r['paper_model']:20} {r['paper']:6.0%} {r['ours']:6.1%} "
                  f"{r['best']:7.1%} ({r['best_epoch']:3d}) {r['train']:6.1%} "
                  f"{r['seconds']:8.1f}", flush=True)
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
