"""Fault campaign for the run directory and its checkpoints (issue 21): random SIGKILLs and
kinds of damage, each followed by ``fbackprop train --resume``, counted.

Not part of the test suite (it runs the command line about 80 times: ~15 min on 2 cores).

* **Kills**: ``N`` runs of ``fbackprop train --data xor --epochs 6 --checkpoint-every 1`` are
  killed (SIGKILL) at a uniformly random moment between the appearance of ``config.json`` and
  the end of an uninterrupted run — so the epoch-0 window (before the first epoch's checkpoint
  is verified) is hit too — then resumed once. A kill is *resumed* when the resume exits 0 and
  its metrics equal the uninterrupted run's bit for bit, a *dead end* otherwise.
* **Damage**: a finished run (and a small character-level run, for ``vocab.json``) is damaged
  in one way per kind, then resumed with ``--epochs`` raised; the outcome is *fallen back* (exit
  0, the damaged step skipped or the run restarted from epoch 0), *resumed* (exit 0, nothing to
  skip), *refused* (a non-zero exit with one ``error:`` line naming the file), *traceback* or
  *hang* (no exit within the time limit).

Every resume runs without ``CAP_DAC_OVERRIDE`` (``setpriv``), so that file permissions bind
even for root, as they would for any user.

Usage::

    PYTHONPATH=. python scripts/fault_campaign.py [--kills 40] [--write-docs]

``--write-docs`` replaces the tables between the ``fault_campaign`` markers of
docs/TRAINING.md with this run's.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
EPOCHS = 6
BASE = ["--data", "xor", "--checkpoint-every", "1", "--no-progress"]
TIMEOUT = 120  # seconds a resume may take before it counts as a hang
DROP = (["setpriv", "--bounding-set=-dac_override,-dac_read_search",
         "--inh-caps=-dac_override,-dac_read_search"] if shutil.which("setpriv") else [])
MARK, END = "<!-- fault_campaign:{} -->", "<!-- /fault_campaign:{} -->"


def _env(cache):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), JAX_COMPILATION_CACHE_DIR=str(cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return env


def _cli(args, env, *, drop=True, timeout=TIMEOUT):
    """Run ``fbackprop train ARGS``: ``(returncode or "hang", stdout, stderr, seconds)``."""
    t0 = time.monotonic()
    try:
        p = subprocess.run((DROP if drop else []) + [sys.executable, "-m", "fbackprop", "train"]
                           + args, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        return "hang", err.stdout or "", err.stderr or "", time.monotonic() - t0
    return p.returncode, p.stdout, p.stderr, time.monotonic() - t0


def _losses(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["epoch"], r["loss"], r["test_loss"]) for r in rows]


def _verified(out):
    """The epochs whose checkpoint has its checksum file (what a kill left verified)."""
    steps = out / "checkpoints"
    return sorted(int(p.name) for p in steps.iterdir()
                  if p.name.isdigit() and (p / "fbackprop_checksum.json").exists()) \
        if steps.is_dir() else []


def _timing(out, env):
    """Seconds from ``config.json`` to epoch 1's verified checkpoint, and to the last one."""
    proc = subprocess.Popen([sys.executable, "-m", "fbackprop", "train"] + BASE
                            + ["--epochs", str(EPOCHS), "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (out / "config.json").exists():
        time.sleep(0.001)
    t0, first = time.monotonic(), None
    while proc.poll() is None:
        if first is None and 1 in _verified(out):
            first = time.monotonic() - t0
        time.sleep(0.001)
    return first or 0.5, time.monotonic() - t0


def kills(n, work, env, rng):
    """``n`` random SIGKILLs, each resumed once. Returns the counts and one row per kill."""
    ref = work / "reference"
    code, _, err, _ = _cli(BASE + ["--epochs", str(EPOCHS), "--out", str(ref)], env, drop=False)
    assert code == 0, err
    first, last = _timing(work / "timing", env)
    rows = []
    for i in range(n):
        out = work / f"kill-{i}"
        # every other kill is drawn from the epoch-0 window (until epoch 1's checkpoint is
        # verified, with a margin), the others from the whole run
        delay = float(rng.uniform(0, 1.5 * first if i % 2 else last))
        proc = subprocess.Popen([sys.executable, "-m", "fbackprop", "train"] + BASE
                                + ["--epochs", str(EPOCHS), "--out", str(out)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not (out / "config.json").exists() and proc.poll() is None:
            time.sleep(0.002)
        time.sleep(delay)
        landed = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        verified = _verified(out)
        # one epoch more than planned, so that a kill after the last checkpoint resumes too
        code, stdout, stderr, secs = _cli(BASE + ["--out", str(out), "--resume", "--epochs",
                                                  str(EPOCHS + 1)], env)
        same = code == 0 and _losses(out)[:EPOCHS] == _losses(ref)
        rows.append({"delay": round(delay, 3), "landed": landed, "newest_verified":
                     verified[-1] if verified else None, "exit": code, "identical": same,
                     "seconds": round(secs, 1), "last": (stderr.strip().splitlines() or [""])[-1]
                     if code != 0 else ""})
        print(f"kill {i}: {rows[-1]}", flush=True)
    return summarize(rows), rows


def summarize(rows):
    """The counts of the kill rows: landed, resumed bit-identical, dead ends, in the epoch-0
    window (no step past epoch 0 verified when the kill landed)."""
    landed = [r for r in rows if r["landed"]]
    return {"kills": len(landed), "resumed": sum(r["identical"] for r in landed),
            "dead_ends": sum(not r["identical"] for r in landed),
            "epoch0_window": sum(r["newest_verified"] in (None, 0) for r in landed),
            "finished_before_kill": len(rows) - len(landed)}


def _step(out, epoch=4):
    return out / "checkpoints" / str(epoch)


def _data_file(out):
    return max((_step(out) / "default" / "d").iterdir(), key=lambda p: p.stat().st_size)


def _edit(path, change):
    path.write_bytes(change(bytearray(path.read_bytes())))


def _half(b):
    return bytes(b[:len(b) // 2])


def _flip(b):
    b[len(b) // 2] ^= 0x10
    return bytes(b)


def _noise(b):
    b[len(b) // 3: len(b) // 3 + 256] = np.random.default_rng(0).bytes(256)
    return bytes(b)


def _json_edit(path, change):
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d))


def _swap(out):
    shutil.rmtree(_step(out) / "default")
    shutil.copytree(_step(out, 3) / "default", _step(out) / "default")


def _replace_by_dir(path):
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    path.mkdir()
    (path / "x").write_text("x")


def _replace_by_file(path):
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    path.write_text("not a directory\n")


def _checksum(out, change):
    _json_edit(_step(out) / "fbackprop_checksum.json", change)


def _unset(d, key):
    del d[key]


def _metrics_torn_middle(out):
    lines = (out / "metrics.jsonl").read_text().splitlines(keepends=True)
    lines[1] = lines[1][: len(lines[1]) // 2] + "\n"
    (out / "metrics.jsonl").write_text("".join(lines))


def _metrics_torn_last(out):
    text = (out / "metrics.jsonl").read_text()
    (out / "metrics.jsonl").write_text(text[: len(text) - 20])


def _every_checksum(out):
    for p in (out / "checkpoints").glob("*/fbackprop_checksum.json"):
        p.unlink()


def _chmod(path, mode):
    path.chmod(mode)


def _vocab_chars(out):
    def change(d):
        d["vocab"][0], d["vocab"][1] = d["vocab"][1], d["vocab"][0]
    _json_edit(out / "vocab.json", change)


XOR_DAMAGE = {
    "a step's data file truncated": lambda o: _edit(_data_file(o), _half),
    "a step's data file emptied": lambda o: _data_file(o).write_bytes(b""),
    "random bytes in a step's data file": lambda o: _edit(_data_file(o), _noise),
    "one bit flipped in a step's data file": lambda o: _edit(_data_file(o), _flip),
    "a step holding another step's arrays": _swap,
    "a step's `_METADATA` deleted": lambda o: (_step(o) / "default" / "_METADATA").unlink(),
    "a step's checksum file deleted": lambda o: (_step(o) / "fbackprop_checksum.json").unlink(),
    "a step's checksum file not JSON": lambda o: (_step(o) / "fbackprop_checksum.json")
    .write_text('{"sha256": '),
    'a checksum file with `"leaves": 5`': lambda o: _checksum(o, lambda d: d.update(leaves=5)),
    'a checksum leaf without `"sha256"`': lambda o: _checksum(
        o, lambda d: _unset(d["leaves"][0], "sha256")),
    "a checksum leaf with an unknown dtype": lambda o: _checksum(
        o, lambda d: d["leaves"][0].update(dtype="float99")),
    "the newest step unreadable (mode 000)": lambda o: _chmod(_step(o), 0),
    "the newest step directory deleted": lambda o: shutil.rmtree(_step(o)),
    "every step's checksum file deleted": _every_checksum,
    "`checkpoints/` replaced by a file": lambda o: _replace_by_file(o / "checkpoints"),
    "`checkpoints/` read-only (mode 555)": lambda o: _chmod(o / "checkpoints", 0o555),
    "`quarantine` a file": lambda o: (o / "quarantine").write_text("x"),
    "`metrics.jsonl` replaced by a directory": lambda o: _replace_by_dir(o / "metrics.jsonl"),
    "`plot.png` replaced by a directory": lambda o: _replace_by_dir(o / "plot.png"),
    "`.lock` replaced by a directory": lambda o: _replace_by_dir(o / ".lock"),
    "`config.json` unreadable (mode 000)": lambda o: _chmod(o / "config.json", 0),
    "`config.json` deleted": lambda o: (o / "config.json").unlink(),
    "`config.json` not JSON": lambda o: (o / "config.json").write_text("{"),
    "`config.json` edited: hidden": lambda o: _json_edit(
        o / "config.json", lambda d: d.update(hidden=[16])),
    "`config.json` edited: optimizer": lambda o: _json_edit(
        o / "config.json", lambda d: d.update(optimizer="sgd")),
    "`config.json` edited: batch_size": lambda o: _json_edit(
        o / "config.json", lambda d: d.update(batch_size=32)),
    "`metrics.jsonl` deleted": lambda o: (o / "metrics.jsonl").unlink(),
    "a torn line in the middle of `metrics.jsonl`": _metrics_torn_middle,
    "a torn last line of `metrics.jsonl`": _metrics_torn_last,
}

TEXT_DAMAGE = {
    "`vocab.json` garbage bytes": lambda o: (o / "vocab.json").write_bytes(b"\xff\xfe\x00garbage"),
    "`vocab.json` characters edited": _vocab_chars,
    "`vocab.json` window length edited": lambda o: _json_edit(
        o / "vocab.json", lambda d: d.update(seq_len=d["seq_len"] + 1)),
}


def _classify(code, stdout, stderr):
    if code == "hang":
        return "hang"
    if "Traceback" in stderr:
        return "traceback"
    if code == 0:
        said = stdout + stderr
        return "fallen back" if ("skipped" in said or "from scratch" in said) else "resumed"
    errors = [line for line in stderr.splitlines() if line.startswith("fbackprop train: error")]
    return "refused" if len(errors) == 1 else f"exit {code}"


def damage(work, env):
    """Each kind of damage on a copy of a finished run, resumed. Returns one row per kind."""
    xor_run, text_run = work / "xor-run", work / "text-run"
    code, _, err, _ = _cli(BASE + ["--epochs", "4", "--out", str(xor_run)], env, drop=False,
                           timeout=600)
    assert code == 0, (code, err)
    corpus = work / "corpus.txt"
    corpus.write_text(" ".join(f"line {i} of a small corpus" for i in range(120)))
    text = ["--model", "transformer", "--data", f"text:{corpus}", "--hidden", "16",
            "--checkpoint-every", "1", "--no-progress"]
    code, _, err, _ = _cli(text + ["--epochs", "4", "--out", str(text_run)], env, drop=False,
                           timeout=600)
    assert code == 0, (code, err)
    rows = []
    for kinds, base, args in ((XOR_DAMAGE, xor_run, BASE), (TEXT_DAMAGE, text_run, text)):
        for i, (name, act) in enumerate(kinds.items()):
            out = work / f"damaged-{base.name}-{i}"
            shutil.copytree(base, out)
            act(out)
            code, stdout, stderr, secs = _cli(args + ["--out", str(out), "--resume",
                                                      "--epochs", "6"], env)
            outcome = _classify(code, stdout, stderr)
            said = [line for line in (stderr + stdout).splitlines()
                    if "error:" in line or "skipped" in line or "from scratch" in line]
            rows.append({"damage": name, "outcome": outcome, "exit": code,
                         "seconds": round(secs, 1), "said": said[-1][:300] if said else "",
                         "stderr": stderr[-3000:] if outcome not in ("fallen back", "resumed",
                                                                     "refused") else ""})
            print(f"{name}: {rows[-1]}", flush=True)
            for p in [out, *out.rglob("*")]:  # undo chmods so the directory can be removed
                if not p.is_symlink():
                    p.chmod(p.stat().st_mode | stat.S_IRWXU)
    return rows


def _outcome(row):
    """The outcome as the table states it: a run that exited 0 after falling back, while
    orbax's reader threads printed tracebacks on stderr, is told apart from a failed run."""
    if row["outcome"] == "traceback" and row["exit"] == 0 and "skipped" in row["said"]:
        return "fallen back (stray tracebacks)"
    return row["outcome"]


def _tables(summary, damage_rows):
    damage_rows = [dict(r, outcome=_outcome(r)) for r in damage_rows]
    lines = []
    if summary:
        lines += [f"Kills: **{summary['kills']}** random SIGKILLs landed during a run "
                  f"({summary['epoch0_window']} of them before the first epoch's checkpoint "
                  f"was verified: the epoch-0 window); **{summary['resumed']}** resumed to "
                  f"metrics bit-identical with an uninterrupted run, **{summary['dead_ends']}** "
                  f"dead ends.", ""]
    if damage_rows:
        counts = {}
        for r in damage_rows:
            counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
        lines += ["| damage | `--resume` | exit | what it says (abridged) |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {r['damage']} | {r['outcome']} | {r['exit']} | "
                  f"{_abridge(r['said'])} |" for r in damage_rows]
        lines += ["", f"{len(damage_rows)} kinds: " + ", ".join(
            f"{counts.get(k, 0)} {k}" for k in ("fallen back", "fallen back (stray tracebacks)",
                                               "resumed", "refused", "traceback", "hang")) + "."]
    return "\n".join(lines)


def _abridge(text):
    text = text.replace("|", "\\|").replace("fbackprop train: ", "")
    for tmp in (str(pathlib.Path(tempfile.gettempdir())),):
        text = text.replace(tmp, "")
    return (text[:140] + " …") if len(text) > 140 else text


def _write_docs(table):
    doc = ROOT / "docs" / "TRAINING.md"
    text = doc.read_text()
    start, end = MARK.format("tables"), END.format("tables")
    if start not in text:
        raise SystemExit(f"{doc} has no {start} marker")
    head, rest = text.split(start, 1)
    doc.write_text(head + start + "\n" + table + "\n" + end + rest.split(end, 1)[1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--no-damage", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--default-checkpoints", action="store_true",
                        help="kill runs with the default checkpoints (at most one per 10 s: "
                             "a run of seconds saves only its end) instead of "
                             "--checkpoint-every 1")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--json", type=pathlib.Path, help="write every row here")
    parser.add_argument("--tables-from", type=pathlib.Path, nargs="+", metavar="JSON",
                        help="run nothing: render the tables from earlier --json files (the "
                             "kills of one, the damage of another)")
    args = parser.parse_args(argv)
    if args.default_checkpoints:
        BASE.remove("--checkpoint-every")
        BASE.remove("1")
    if args.tables_from:
        saved = [json.loads(path.read_text()) for path in args.tables_from]
        rows = [r for d in saved for r in d.get("kill_rows") or []]
        table = _tables(summarize(rows) if rows else None,
                        [r for d in saved for r in d.get("damage") or []])
        print(table)
        if args.write_docs:
            _write_docs(table)
        return
    work = pathlib.Path(tempfile.mkdtemp(prefix="fault-campaign-"))
    env = _env(work / "jax-cache")
    try:
        summary, kill_rows = kills(args.kills, work, env, np.random.default_rng(args.seed)) \
            if args.kills else (None, [])
        damage_rows = [] if args.no_damage else damage(work, env)
    finally:
        for p in work.rglob("*"):
            if p.is_dir() and not p.is_symlink():
                p.chmod(p.stat().st_mode | stat.S_IRWXU)
        shutil.rmtree(work, ignore_errors=True)
    table = _tables(summary, damage_rows)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"kills": summary, "kill_rows": kill_rows,
                                         "damage": damage_rows}, indent=1))
    if args.write_docs:
        _write_docs(table)


if __name__ == "__main__":
    main()
