"""Probe the public API with bad arguments and count the answers: clear, vague or silent.

Each case calls one public function with one bad argument and names the argument(s) a clear
message must mention. The answer is

- clear: a ``TypeError``/``ValueError`` (``FileNotFoundError`` for a path) whose message names
  the argument;
- vague: any other exception (a raw JAX/NumPy error, an ``AttributeError``, …), or a
  ``TypeError``/``ValueError`` that does not name the argument;
- silent: no exception at all (a NaN, a wrong result, or a value quietly ignored).

Usage::

    PYTHONPATH=. python scripts/probe_inputs.py        # the counts, then each vague/silent case
    PYTHONPATH=. python scripts/probe_inputs.py --all      # every case with its message

The cases are cheap (no case trains for more than one epoch of xor), about a minute on a CPU.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import fbackprop as fb
from fbackprop import data as datasets

KEY = jax.random.PRNGKey(0)
NET = fb.mlp([2, 4, 3], output_activation="identity")
PARAMS = NET.init(KEY)
X = np.linspace(-1, 1, 10, dtype=np.float32).reshape(5, 2)
Y = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1]]
DENSE = fb.dense(2, 3)
DENSE_P = DENSE.init(KEY)
TMP = tempfile.mkdtemp(prefix="probe_inputs_")


def _with(a, index, value):
    a = np.array(a)
    a[index] = value
    return a


def _grad(*args, cost="softmax_cross_entropy", net=NET):
    return fb.manual_grad(net, cost)(*args)


def _train(**kw):
    kw = {"epochs": 1, **kw}
    return fb.train(kw.pop("model", "mlp"), kw.pop("data", "xor"), **kw)


def _seq_net():
    return fb.serial(fb.embedding(5, 3), fb.dense(3, 5, "identity"))


# (id, argument names a clear message mentions, call)
CASES = [
    # --- layers and models: sizes, names, flags ---
    ("dense n_in 0", ["n_in"], lambda: fb.dense(0, 3)),
    ("dense n_out -1", ["n_out"], lambda: fb.dense(2, -1)),
    ("dense n_in 2.5", ["n_in"], lambda: fb.dense(2.5, 3)),
    ("dense activation 'nope'", ["activation"], lambda: fb.dense(2, 3, "nope")),
    ("dense activation 3", ["activation"], lambda: fb.dense(2, 3, 3)),
    ("dense bias None", ["bias"], lambda: fb.dense(2, 3, bias=None)),
    ("dense dtype int32", ["dtype"], lambda: fb.dense(2, 3, dtype=jnp.int32).init(KEY)),
    ("dense dtype 'float65'", ["dtype"], lambda: fb.dense(2, 3, dtype="float65").init(KEY)),
    ("conv kernel 0", ["kernel_size"], lambda: fb.conv(1, 2, 0)),
    ("conv channels 0", ["in_channels"], lambda: fb.conv(0, 2, 3)),
    ("conv kernel (3, -1)", ["kernel_size"], lambda: fb.conv(1, 2, (3, -1))),
    ("mean_pool 0", ["pool_size"], lambda: fb.mean_pool(0)),
    ("max_pool 'a'", ["pool_size"], lambda: fb.max_pool("a")),
    ("rnn_layer output 'first'", ["output"], lambda: fb.rnn_layer(2, 3, output="first")),
    ("lstm_layer n_hidden 0", ["n_hidden"], lambda: fb.lstm_layer(2, 0)),
    ("gru_layer n_in None", ["n_in"], lambda: fb.gru_layer(None, 3)),
    ("concat axis 'x'", ["axis"], lambda: fb.concat("x")),
    ("elementwise 'nope'", ["activation"], lambda: fb.elementwise("nope")),
    ("dropout rate 1", ["rate"], lambda: fb.dropout(1.0)),
    ("dropout rate -0.1", ["rate"], lambda: fb.dropout(-0.1)),
    ("dropout rate nan", ["rate"], lambda: fb.dropout(float("nan"))),
    ("layer_norm eps 0", ["eps"], lambda: fb.layer_norm(4, eps=0.0)),
    ("layer_norm eps -1", ["eps"], lambda: fb.layer_norm(4, eps=-1.0)),
    ("layer_norm n 0", ["n"], lambda: fb.layer_norm(0)),
    ("embedding vocab 0", ["vocab_size"], lambda: fb.embedding(0, 3)),
    ("positional max_len 0", ["max_len"], lambda: fb.positional(0, 3)),
    ("attention heads not dividing", ["n_heads"], lambda: fb.causal_self_attention(6, 4)),
    ("attention d_model 0", ["d_model"], lambda: fb.causal_self_attention(0, 1)),
    ("mlp sizes [2]", ["sizes"], lambda: fb.mlp([2])),
    ("mlp sizes [2, 0, 3]", ["sizes"], lambda: fb.mlp([2, 0, 3])),
    ("mlp sizes 'abc'", ["sizes"], lambda: fb.mlp("abc")),
    ("mlp output_activation 'nope'", ["output_activation"],
     lambda: fb.mlp([2, 3], output_activation="nope")),
    ("cnn pool 'median'", ["pool"], lambda: fb.cnn((1, 8, 8), conv_channels=(2,), kernel_size=3,
                                                  pool_size=2, n_out=3, pool="median")),
    ("cnn kernel larger than image", ["kernel_size"], lambda: fb.cnn(
        (1, 4, 4), conv_channels=(2,), kernel_size=9, pool_size=1, n_out=3)),
    ("cnn n_out 0", ["n_out"], lambda: fb.cnn((1, 8, 8), conv_channels=(2,), kernel_size=3,
                                              pool_size=2, n_out=0)),
    ("rnn n_hidden 0", ["n_hidden"], lambda: fb.rnn(3, 0, 2)),
    ("rnn activation 'nope'", ["activation"], lambda: fb.rnn(3, 4, 2, activation="nope")),
    ("rnn output 'both'", ["output"], lambda: fb.rnn(3, 4, 2, output="both")),
    ("rnn too large to allocate", ["parameters"], lambda: float(jnp.sum(
        jax.tree.leaves(fb.rnn(3, 10**6, 2).init(KEY))[0]))),
    ("lstm n_out 0", ["n_out"], lambda: fb.lstm(3, 4, 0)),
    ("gru n_in -2", ["n_in"], lambda: fb.gru(-2, 4, 2)),
    ("transformer heads not dividing", ["n_heads"], lambda: fb.transformer(5, 6, 4, 1, 8)),
    ("transformer dropout 1.5", ["dropout"], lambda: fb.transformer(5, 8, 2, 1, 8, dropout=1.5)),
    ("transformer mlp_ratio 0", ["mlp_ratio"], lambda: fb.transformer(5, 8, 2, 1, 8,
                                                                      mlp_ratio=0)),
    ("serial of a non-layer", ["argument"], lambda: fb.serial(DENSE, 3)),
    ("serial input_shape 'x'", ["input_shape"], lambda: fb.serial(DENSE, input_shape="x")),
    ("dag unknown input", ["input", "unknown", "node"], lambda: fb.dag(
        [("a", DENSE, "nope")], "a")),
    ("dag unknown output", ["output"], lambda: fb.dag([("a", DENSE, "x")], "b")),
    ("dag empty", ["nodes", "node"], lambda: fb.dag([], "a")),
    ("residual name ''", ["name"], lambda: fb.residual("", DENSE)),
    ("with_dropout_key key 3", ["key"], lambda: fb.with_dropout_key(NET, 3)),
    ("get_activation 3", ["activation"], lambda: fb.get_activation(3)),
    ("get_cost 'nope'", ["cost"], lambda: fb.get_cost("nope")),
    ("get_cost None", ["cost"], lambda: fb.get_cost(None)),
    ("Cost C not callable", ["C", "Cost.C"], lambda: fb.get_cost(fb.Cost("c", 1,
                                                                        lambda y, a: a))),
    # --- the manual pass: x, y, params, mask ---
    ("x int", ["x"], lambda: _grad(PARAMS, X.astype(np.int32), Y)),
    ("x string", ["x"], lambda: _grad(PARAMS, "abc", Y)),
    ("x wrong width", ["x"], lambda: _grad(PARAMS, X[:, :1], Y)),
    ("x no batch axis", ["x"], lambda: _grad(PARAMS, X[0], Y[0])),
    ("x empty batch", ["x"], lambda: _grad(PARAMS, X[:0], Y[:0])),
    ("x NaN", ["x"], lambda: _grad(PARAMS, _with(X, (0, 0), np.nan), Y)),
    ("y wrong shape", ["y"], lambda: _grad(PARAMS, X, Y[:, :2])),
    ("y labels not one-hot", ["y"], lambda: _grad(PARAMS, X, np.array([0, 1, 2, 0, 1]))),
    ("y string", ["y"], lambda: _grad(PARAMS, X, "abc")),
    ("y batch differs", ["y"], lambda: _grad(PARAMS, X, Y[:4])),
    ("y NaN, mse", ["y"], lambda: _grad(PARAMS, X, _with(Y, (0, 0), np.nan), cost="mse")),
    ("params None", ["params"], lambda: _grad(None, X, Y)),
    ("params missing a layer", ["params"], lambda: _grad(PARAMS[:1], X, Y)),
    ("params wrong leaf shape", ["params"], lambda: _grad(
        (PARAMS[0], {**PARAMS[1], "W": PARAMS[1]["W"][:2]}), X, Y)),
    ("params NaN", ["params"], lambda: _grad(
        jax.tree.map(lambda a: a * np.nan, PARAMS), X, Y)),
    ("mask zeros", ["mask"], lambda: _grad(PARAMS, X, Y, np.zeros(5, np.float32))),
    ("mask NaN", ["mask"], lambda: _grad(PARAMS, X, Y, _with(np.ones(5, np.float32), 0,
                                                                 np.nan))),
    ("mask negative", ["mask"], lambda: _grad(PARAMS, X, Y, -np.ones(5, np.float32))),
    ("mask (5, 1)", ["mask"], lambda: fb.loss_fn(NET, "softmax_cross_entropy")(
        PARAMS, X, Y, np.ones((5, 1), np.float32))),
    ("mask (4,)", ["mask"], lambda: _grad(PARAMS, X, Y, np.ones(4, np.float32))),
    ("mask string", ["mask"], lambda: _grad(PARAMS, X, Y, "all")),
    ("token ids >= vocab", ["x", "token"], lambda: _grad(
        _seq_net().init(KEY), np.array([[0, 7]]), np.array([[1, 2]]), net=_seq_net())),
    ("token ids >= vocab under jit (NaN)", ["x", "token"], lambda: _finite_or_raise(
        jax.jit(fb.manual_grad(_seq_net(), "softmax_cross_entropy"))(
            _seq_net().init(KEY), np.array([[0, 7]]), np.array([[1, 2]])))),
    ("token ids float", ["x"], lambda: _grad(
        _seq_net().init(KEY), np.array([[0.0, 1.0]]), np.array([[1, 2]]), net=_seq_net())),
    ("backprop input_grad 'yes'", ["input_grad"], lambda: fb.backprop(
        NET, "mse", input_grad="yes")(PARAMS, X, Y)),
    ("loss_fn net not a Network", ["net"], lambda: fb.loss_fn(DENSE, "mse")(DENSE_P, X, Y)),
    ("manual_grad cost 3", ["cost"], lambda: fb.manual_grad(NET, 3)),
    ("forward params None", ["params"], lambda: fb.forward(NET, None, X)),
    ("forward x wrong width", ["x"], lambda: fb.forward(NET, PARAMS, X[:, :1])),
    ("backward d_L wrong shape", ["d_L"], lambda: fb.backward(
        NET, PARAMS, fb.forward(NET, PARAMS, X), Y[:, :2])),
    ("apply x wrong width", ["x"], lambda: NET.apply(PARAMS, X[:, :1])),
    ("init key None", ["key"], lambda: NET.init(None)),
    ("init key 3", ["key"], lambda: NET.init(3)),
    ("astype dtype 'nope'", ["dtype"], lambda: fb.astype(PARAMS, "nope")),
    ("delta_norms y wrong shape", ["y"], lambda: fb.delta_norms(NET, "mse", PARAMS, X, Y[:, :2])),
    # --- checks ---
    ("check x NaN", ["x"], lambda: fb.check(NET, "mse", PARAMS, _with(X, (0, 0), np.nan), Y)),
    ("check dtype 'int32'", ["dtype"], lambda: fb.check(NET, "mse", PARAMS, X, Y,
                                                        dtype="int32")),
    ("check tolerance -1", ["tolerance"], lambda: fb.check(NET, "mse", PARAMS, X, Y,
                                                           tolerance=-1)),
    ("check directions 0", ["directions"], lambda: fb.check(
        NET, "mse", PARAMS, X, Y, finite_differences=True, directions=0)),
    ("check eps 0", ["eps"], lambda: fb.check(NET, "mse", PARAMS, X, Y,
                                              finite_differences=True, eps=0)),
    ("check resample -1", ["resample"], lambda: fb.check(NET, "mse", PARAMS, X, Y, resample=-1)),
    ("check seed -1", ["seed"], lambda: fb.check(NET, "mse", PARAMS, X, Y, seed=-1)),
    ("check net a Layer", ["net"], lambda: fb.check(DENSE, "mse", DENSE_P, X, Y)),
    ("check_layer empty batch", ["a"], lambda: _ok_or_raise(fb.check_layer(
        DENSE, DENSE_P, np.zeros((0, 2))))),
    ("check_layer NaN input", ["a"], lambda: _ok_or_raise(fb.check_layer(
        DENSE, DENSE_P, _with(X, (0, 0), np.nan)))),
    ("check_layer NaN params", ["params"], lambda: _ok_or_raise(fb.check_layer(
        DENSE, jax.tree.map(lambda a: a * np.nan, DENSE_P), X))),
    ("check_layer a wrong width", ["a"], lambda: fb.check_layer(DENSE, DENSE_P, X[:, :1])),
    ("check_layer params wrong", ["params"], lambda: fb.check_layer(DENSE, {"W": 1.0}, X)),
    ("check_layer layer a Network", ["layer"], lambda: fb.check_layer(NET, PARAMS, X)),
    ("check_vjp f plain", ["f"], lambda: fb.check_vjp(lambda x: x, X)),
    ("check_vjp NaN args", ["args"], lambda: _ok_or_raise(fb.check_vjp(
        fb.as_custom_vjp(DENSE), DENSE_P, _with(X, (0, 0), np.nan)))),
    ("check_grad loss not callable", ["loss"], lambda: fb.check_grad(3, lambda p: p, PARAMS)),
    ("as_custom_vjp of 3", ["obj", "as_custom_vjp"], lambda: fb.as_custom_vjp(3)),
    # --- notation ---
    ("D of 3", ["phi", "D"], lambda: fb.D(3)),
    ("compose of 3", ["fs", "compose"], lambda: fb.compose(3)),
    ("star lengths differ", ["fs", "ps", "⋆"], lambda: fb.star([jnp.sin], [1.0, 2.0])),
    ("nabla arity 0", ["arity"], lambda: fb.nabla(lambda a: a, arity=0)),
    # --- data ---
    ("load 'nope'", ["data"], lambda: datasets.load("nope")),
    ("load 3", ["data"], lambda: datasets.load(3)),
    ("load text: missing file", ["text", "path"], lambda: datasets.load("text:/no/such/file")),
    ("digits test_fraction -0.1", ["test_fraction"], lambda: datasets.digits(test_fraction=-0.1)),
    ("digits test_fraction 1.5", ["test_fraction"], lambda: datasets.digits(test_fraction=1.5)),
    ("digits seed -1", ["seed"], lambda: datasets.digits(seed=-1)),
    ("xor noise -1", ["noise"], lambda: datasets.xor(noise=-1)),
    ("xor n_train 0", ["n_train"], lambda: datasets.xor(n_train=0)),
    ("xor n_test 2.5", ["n_test"], lambda: datasets.xor(n_test=2.5)),
    ("xor seed -1", ["seed"], lambda: datasets.xor(seed=-1)),
    ("sine n_train -1", ["n_train"], lambda: datasets.sine(n_train=-1)),
    ("logistic2d separation nan", ["separation"], lambda: datasets.logistic2d(
        separation=float("nan"))),
    ("modadd p 1", ["p"], lambda: datasets.modadd(p=1)),
    ("modadd train_fraction 0", ["train_fraction"], lambda: datasets.modadd(train_fraction=0)),
    ("modadd seed -1", ["seed"], lambda: datasets.modadd(seed=-1)),
    ("text seq_len 0", ["seq_len"], lambda: datasets.text(__file__, seq_len=0)),
    ("text seed -1", ["seed"], lambda: datasets.text(__file__, seed=-1)),
    ("one_hot negative id", ["tokens"], lambda: datasets.one_hot(np.array([[-1, 2]]), 3)),
    ("one_hot id >= vocab", ["tokens"], lambda: datasets.one_hot(np.array([[3]]), 3)),
    ("one_hot vocab_size 0", ["vocab_size"], lambda: datasets.one_hot(np.array([[0]]), 0)),
    ("one_hot float ids", ["tokens"], lambda: datasets.one_hot(np.array([[0.5]]), 3)),
    ("decode negative id", ["tokens"], lambda: datasets.decode([-1], ("a", "b"))),
    ("decode id >= vocab", ["tokens"], lambda: datasets.decode([5], ("a", "b"))),
    ("decode vocab a string", ["vocab"], lambda: datasets.decode([0], "ab")),
    ("Dataset regression widths differ", ["y_train", "y_test"], lambda: datasets.load(
        datasets.sine()._replace(y_test=np.zeros((200, 2), np.float32)))),
    ("Dataset task 'nope'", ["task"], lambda: datasets.load(datasets.xor()._replace(task="nope"))),
    ("Dataset labels out of range", ["y_train"], lambda: datasets.load(
        datasets.xor()._replace(y_train=datasets.xor().y_train + 5))),
    ("Dataset x_train 1-D", ["x_train"], lambda: datasets.load(
        datasets.xor()._replace(x_train=np.zeros(400, np.float32)))),
    ("Dataset x_test width differs", ["x_test"], lambda: datasets.load(
        datasets.xor()._replace(x_test=np.zeros((200, 3), np.float32)))),
    # --- training ---
    ("train force 'no'", ["force"], lambda: _train(out=f"{TMP}/a", force="no")),
    ("train resume 1", ["resume"], lambda: _train(out=f"{TMP}/b", resume=1)),
    ("train progress 'yes'", ["progress"], lambda: _train(progress="yes")),
    ("train hidden for a network", ["hidden"], lambda: _train(
        model=fb.mlp([2, 4, 1], output_activation="identity"), hidden=(3,))),
    ("train lr 1e-320", ["learning rate", "lr"], lambda: _train(lr=1e-320)),
    ("train lr 0", ["learning rate", "lr"], lambda: _train(lr=0)),
    ("train lr '0.1'", ["learning rate", "lr"], lambda: _train(lr="0.1")),
    ("train epochs 0", ["epochs"], lambda: _train(epochs=0)),
    ("train epochs 1.5", ["epochs"], lambda: _train(epochs=1.5)),
    ("train batch_size 0", ["batch_size"], lambda: _train(batch_size=0)),
    ("train batch_size > n", ["batch_size"], lambda: _train(batch_size=10**6)),
    ("train optimizer 'nope'", ["optimizer"], lambda: _train(optimizer="nope")),
    ("train mode 'nope'", ["mode"], lambda: _train(mode="nope")),
    ("train grad 'nope'", ["grad"], lambda: _train(grad="nope")),
    ("train model 'nope'", ["model"], lambda: _train(model="nope")),
    ("train model 3", ["model"], lambda: _train(model=3)),
    ("train data 'nope'", ["data"], lambda: _train(data="nope")),
    ("train seed 2**40", ["seed"], lambda: _train(seed=2**40)),
    ("train hidden (0,)", ["hidden"], lambda: _train(hidden=(0,))),
    ("train hidden 'abc'", ["hidden"], lambda: _train(hidden="abc")),
    ("train check_every 0", ["check_every"], lambda: _train(check_every=0)),
    ("train weight_decay -1", ["weight_decay", "weight decay"], lambda: _train(optimizer="adamw",
                                                               weight_decay=-1)),
    ("train weight_decay with sgd", ["weight_decay", "weight decay"],
     lambda: _train(optimizer="sgd", weight_decay=0.1)),
    ("train features_per_step for mlp", ["features_per_step"], lambda: _train(
        features_per_step=2)),
    ("train devices 'cpu'", ["devices"], lambda: _train(devices="cpu")),
    ("train devices []", ["devices"], lambda: _train(devices=[])),
    ("train out 3", ["out"], lambda: _train(out=3)),
    ("train resume without out", ["out", "resume"], lambda: _train(resume=True)),
    ("train resume of an empty dir", ["out", "resume"], lambda: _train(out=TMP, resume=True)),
    ("load_run missing", ["path"], lambda: fb.load_run(f"{TMP}/none")),
    ("load_run 3", ["path"], lambda: fb.load_run(3)),
]


def _ok_or_raise(report):
    """A check on bad input that returns ``ok`` hides the problem (silent); one that fails
    blames the rule for its input (vague)."""
    if not report.ok:
        raise _Blamed(report.failure_message().splitlines()[0])
    return report


def _finite_or_raise(tree):
    """A gradient with NaN is a silent answer to a bad input; finite gradients are the
    documented answer (the embedding clamps ids under jit, where no value can raise)."""
    if not all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(tree)):
        return "NaN gradients"
    raise _Documented("x: finite gradients of the clamped token ids (documented)")


class _Documented(Exception):
    """A documented, well-defined answer where no error can be raised (under jit)."""


class _Blamed(Exception):
    """A check report blaming the rule for bad input."""


# cases that may abort the process: each runs in a child process of its own
ISOLATED = {"rnn too large to allocate"}


def _in_child(case_id: str):
    """(verdict, message) of one case run by a child process (an abort is vague)."""
    import subprocess

    code = (f"import sys; sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})"
            f"\nimport probe_inputs as p\ncase = [c for c in p.CASES if c[0] == {case_id!r}][0]"
            f"\nprint('\\n'.join(p.classify(case[2], case[1])))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    if run.returncode != 0:
        return "vague", f"the process died (exit {run.returncode}): {run.stderr.strip()[-160:]}"
    verdict, message = run.stdout.strip().splitlines()[-2:]
    return verdict, message


def classify(call, names):
    """(verdict, message) for one case."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = call()
    except _Documented as err:
        return "clear", str(err)
    except (TypeError, ValueError, FileNotFoundError) as err:
        text = str(err)
        named = any(re.search(rf"(?<![A-Za-z_]){re.escape(n)}(?![A-Za-z_])", text)
                    for n in names)
        return ("clear" if named else "vague"), f"{type(err).__name__}: {text}"
    except Exception as err:  # noqa: BLE001 - every other exception is a vague answer
        return "vague", f"{type(err).__name__}: {err}"
    return "silent", f"returned {str(result)[:120]!r}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="print every case")
    args = parser.parse_args(argv)
    counts = {"clear": 0, "vague": 0, "silent": 0}
    lines = []
    for case_id, names, call in CASES:
        verdict, message = (_in_child(case_id) if case_id in ISOLATED
                            else classify(call, names))
        counts[verdict] += 1
        if args.all or verdict != "clear":
            lines.append(f"{verdict:6s} {case_id}: {message.splitlines()[0][:200]}")
    print(f"{len(CASES)} cases: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
