"""bf16 and fp16 against fp32: the reference runs of mixed precision, over several seeds.

Each pair (model on data) trains with ``fbackprop.train`` — the data set's defaults, the
hand-written gradients — once per precision and seed, and the table gives each run's final test
accuracy, the mean over the seeds, and the mean difference from fp32 with its spread (the
standard deviation of the per-seed differences). One seed compares one draw of initialisation
and batch order; a difference smaller than the spread between seeds of fp32 itself is not an
effect of the precision, so the claim "within 1 point of float32" is made on the mean over the
seeds (docs/TRAINING.md shows this table).

Run:  python scripts/precision_runs.py [--pairs mlp:digits,cnn:mnist1d,transformer:modadd]
      [--precisions fp32,bf16] [--seeds 0,1,2] [--epochs N] [--json]
      python scripts/precision_runs.py --smoke   (1 epoch of mlp on xor: the test suite)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import fbackprop as fb

PAIRS = ("mlp:digits", "cnn:mnist1d", "transformer:modadd")
TOLERANCE_POINTS = 1.0  # the "within 1 point of float32", on the mean over seeds


def run_pair(pair: str, precisions, seeds, epochs=None, log=print) -> dict:
    """Train ``pair`` ("model:data") in each precision and seed.

    Returns:
      ``{"pair", "epochs", "runs": {precision: [accuracy % per seed]}, "seconds": {...}}``.
    """
    model, data = pair.split(":")
    row = {"pair": pair, "seeds": list(seeds), "runs": {}, "seconds": {}}
    for precision in precisions:
        accuracies, seconds = [], []
        for seed in seeds:
            t0 = time.perf_counter()
            result = fb.train(model, data, precision=precision, seed=seed, epochs=epochs,
                              progress=False)
            seconds.append(time.perf_counter() - t0)
            accuracies.append(100 * result.history[-1]["test_accuracy"])
            row["epochs"] = result.config.epochs
            log(f"{pair} {precision} seed {seed}: {accuracies[-1]:.2f}% "
                f"({seconds[-1]:.0f} s)")
        row["runs"][precision], row["seconds"][precision] = accuracies, seconds
    return row


def differences(row: dict, precision: str) -> tuple[float, float]:
    """(mean, standard deviation) over the seeds of ``precision``'s accuracy minus fp32's."""
    diffs = [a - b for a, b in zip(row["runs"][precision], row["runs"]["fp32"])]
    return statistics.mean(diffs), (statistics.stdev(diffs) if len(diffs) > 1 else 0.0)


def markdown(rows: list) -> str:
    """The table docs/TRAINING.md shows."""
    low = [p for p in rows[0]["runs"] if p != "fp32"]
    head = ["model on data", "epochs", "fp32 test acc. per seed (mean)"]
    for p in low:
        head += [f"{p} per seed (mean)", f"{p} − fp32, mean ± sd", "within 1 point"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        cells = [f"`{row['pair'].replace(':', '` on `')}`", str(row["epochs"]),
                 _runs(row["runs"]["fp32"])]
        for p in low:
            mean, sd = differences(row, p)
            cells += [_runs(row["runs"][p]), f"{mean:+.2f} ± {sd:.2f}",
                      "yes" if abs(mean) <= TOLERANCE_POINTS else "**no**"]
        lines.append("| " + " | ".join(cells) + " |")
    seeds = rows[0]["seeds"]
    lines += ["", f"Seeds {', '.join(map(str, seeds))}; `fb.train(model, data, precision=P, "
                  f"seed=S)` with the data set's defaults; jax {fb_jax_version()}."]
    return "\n".join(lines)


def _runs(values) -> str:
    return " / ".join(f"{v:.2f}" for v in values) + f" ({statistics.mean(values):.2f})"


def fb_jax_version() -> str:
    import jax

    return f"{jax.__version__} on {jax.devices()[0].platform}"


def _log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def main(argv=None) -> list:
    """Run the pairs and print the table (or JSON); returns the rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", default=",".join(PAIRS))
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=None, help="default: the data set's")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="mlp on xor, 1 epoch, 2 seeds")
    args = parser.parse_args(argv)
    if args.smoke:
        args.pairs, args.seeds, args.epochs = "mlp:xor", "0,1", 1
    precisions = args.precisions.split(",")
    if precisions[0] != "fp32":
        parser.error("--precisions must start with fp32, the reference")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = [run_pair(p, precisions, seeds, args.epochs, _log) for p in args.pairs.split(",")]
    print(json.dumps(rows, indent=1) if args.json else markdown(rows))
    return rows


if __name__ == "__main__":
    main()
