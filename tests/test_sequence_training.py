"""Training on token sequences: the transformer on modular addition and on a character corpus,
AdamW, the saved vocabulary, resume, and sampling; and the GRU with every gradient source."""
from __future__ import annotations

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import plain_loop

import fbackprop as fb
from fbackprop import cli, data
from fbackprop.data import Dataset
from fbackprop.training import make_optimizer, sample_text, sample_tokens

pytestmark = [pytest.mark.float32,  # a model trained for a step or two is near chance
              pytest.mark.filterwarnings("ignore:.*near chance:RuntimeWarning")]

CORPUS = "the cat sat on the mat. the dog sat on the log. " * 24  # 18 windows of 64


def _answer_only(ds):
    """modadd's targets written out independently: a one-hot answer at the last position ("=")
    and zero rows (no cost) at the others."""
    y = np.zeros((len(ds.y_train), ds.x_train.shape[1], ds.n_classes), np.float32)
    y[np.arange(len(y)), -1, ds.y_train] = 1.0
    return y


def test_transformer_on_modadd_follows_a_plain_jax_grad_loop():
    ds = data.modadd(7, 0.5)  # 24 training equations; batch 10 leaves a remainder of 4
    # SGD, not Adam: the gradient of the attention's key bias is zero up to rounding (adding
    # q·b_k to every score of a row leaves its softmax unchanged), and Adam would scale that
    # rounding noise to whole steps. AdamW is compared on the GRU below.
    # "checked": the hand-written gradients train, and are compared with jax.grad at every step
    # (a difference stops the run); "autodiff" trains in test_train_command_on_modadd.
    r = fb.train("transformer", ds, hidden=(8,), epochs=2, batch_size=10, grad="checked",
                 optimizer="sgd", lr=0.1, check_every=1, seed=3)
    reference = plain_loop(r.net, "softmax_cross_entropy", ds.x_train, _answer_only(ds),
                           optax.sgd(0.1), 10, 2, 3)
    for got, want in zip(jax.tree.leaves(r.params), jax.tree.leaves(reference)):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    row = r.history[-1]
    assert 0 <= row["test_accuracy"] <= 1 and np.isfinite(row["test_loss_per_token"])
    # modadd scores one position per sequence: the loss per token is the loss per sequence
    assert row["test_loss_per_token"] == pytest.approx(row["test_loss"], rel=1e-6)
    # the accuracy counts the scored position only
    logits = np.asarray(jax.jit(r.net.apply)(r.params, ds.x_test))
    want = np.mean(np.argmax(logits[:, -1], -1) == ds.y_test)  # the answer after "="
    assert r.history[-1]["test_accuracy"] == pytest.approx(want, abs=1e-6)


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    """A tiny character model trained for two epochs on a corpus in a temporary file."""
    root = tmp_path_factory.mktemp("char")
    corpus = root / "corpus.txt"
    corpus.write_text(CORPUS)
    out = root / "run"
    ds = data.text(corpus, seq_len=16)  # resumes cut the corpus into 16s too (vocab.json)
    r = fb.train("transformer", ds, hidden=(16,), epochs=2, batch_size=16, out=out, seed=1)
    return r, corpus, out


def test_a_character_run_saves_its_vocabulary_and_learns(char_run):
    r, corpus, out = char_run
    saved = json.loads((out / "vocab.json").read_text())
    assert saved["vocab"] == sorted(set(CORPUS)) and saved["seq_len"] == 16
    assert saved["data"] == f"text:{corpus.resolve()}"
    first, last = r.history[0], r.history[-1]
    assert last["loss"] < first["loss"]
    # every position is scored: the loss per token is the loss per window over its 16 tokens
    assert last["test_loss_per_token"] == pytest.approx(last["test_loss"] / 16, rel=1e-5)


def test_resume_continues_a_character_run_to_the_same_parameters(char_run, tmp_path,
                                                                 monkeypatch):
    r, corpus, _ = char_run
    out = tmp_path / "resumed"
    fb.train("transformer", data.text(corpus, seq_len=16), hidden=(16,), epochs=1,
             batch_size=16, out=out, seed=1)
    read, real = [], pathlib.Path.read_text
    monkeypatch.setattr(pathlib.Path, "read_text",
                        lambda self, *a, **k: read.append(self.name) or real(self, *a, **k))
    resumed = fb.train(out=out, resume=True, epochs=2)  # data and window length from the run
    monkeypatch.undo()
    assert read.count("config.json") == read.count("vocab.json") == 1  # each read once
    assert resumed.config.data == r.config.data and resumed.config.model == "transformer"
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(r.params)):
        np.testing.assert_array_equal(a, b)  # bit-identical on CPU


def test_resume_refuses_a_corpus_that_changed(char_run, tmp_path):
    _, _, trained = char_run
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    saved = json.loads((out / "vocab.json").read_text())
    saved["vocab"] = [c.upper() for c in saved["vocab"]]  # the corpus, as it was, in capitals
    (out / "vocab.json").write_text(json.dumps(saved))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match="the corpus changed"):
        fb.train(out=out, resume=True, epochs=3)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_greedy_sampling_reads_the_logits_of_the_unpadded_context(char_run):
    r, _, out = char_run
    net, params = r.net, r.params
    prompt = [3, 1, 4, 1, 5]
    ids = sample_tokens(net, params, prompt, 20, jax.random.PRNGKey(0), max_len=16,
                        temperature=0.0)
    assert list(ids[:5]) == prompt and len(ids) == 25
    # Independently: the most likely next token of the context as it is (no padding, no fixed
    # window), the context being the last 16 tokens once there are more.
    apply = jax.jit(net.apply)
    for i in (5, 16, 24):  # a short context, a full one, a slid one
        context = jnp.asarray(ids[max(0, i - 16):i])[None]
        assert ids[i] == int(jnp.argmax(apply(params, context)[0, -1])), i


def test_sample_text_continues_the_prompt_with_corpus_characters(char_run, tmp_path):
    _, corpus, out = char_run
    text = sample_text(out, "the ", 40, seed=2)
    assert text.startswith("the ") and len(text) == 44 and set(text) <= set(CORPUS)
    assert sample_text(out, "the ", 40, seed=2) == text  # a pure function of the seed
    moved = tmp_path / "elsewhere.txt"
    corpus.rename(moved)  # the corpus is not needed: the vocabulary is in the run directory
    try:
        assert sample_text(out, "the ", 5, seed=2) == text[:9]
    finally:
        moved.rename(corpus)


def test_sample_command(char_run, capsys):
    _, _, out = char_run
    assert cli.main(["sample", "--out", str(out), "--prompt", "the", "--length", "12"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("the") and len(printed.rstrip("\n")) == 15
    assert cli.main(["sample", "--out", str(out), "--prompt", "THE"]) == 2
    assert "characters the corpus does not have: 'EHT'" in capsys.readouterr().err


def test_train_command_on_modadd(tmp_path, capsys):
    out = tmp_path / "m"
    assert cli.main(["train", "--model", "transformer", "--data", "modadd", "--hidden", "8",
                     "--epochs", "1", "--grad", "autodiff", "--out", str(out),
                     "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "transformer on modadd: minibatch, adamw lr=0.001 weight decay 1" in printed
    assert "vocab.json" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["weight_decay"] == 1.0 and config["hidden"] == [8]
    vocab = json.loads((out / "vocab.json").read_text())
    assert vocab["vocab"][-2:] == ["+", "="] and len(vocab["vocab"]) == 99
    net, params, loaded = fb.load_run(out)
    assert loaded.weight_decay == 1.0 and net.apply(params, jnp.zeros((1, 4), jnp.int32)).shape \
        == (1, 4, 99)
    assert cli.main(["sample", "--out", str(out)]) == 2
    assert "holds no character model" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs, error, message", [
    ({"model": "mlp", "data": "modadd"}, ValueError, "holds token sequences.*--model transformer"),
    ({"model": "transformer", "data": "xor"}, ValueError, "reads token sequences"),
    ({"model": "transformer", "data": "modadd", "hidden": (8, 16)}, ValueError, "all equal"),
    ({"optimizer": "adam", "weight_decay": 0.1}, ValueError, "applies to the optimizer 'adamw'"),
    ({"optimizer": "adamw", "weight_decay": -1.0}, ValueError, "weight decay"),
])
def test_bad_sequence_settings(kwargs, error, message, tmp_path):
    with pytest.raises(error, match=message):
        fb.train(**{"data": "xor", **kwargs}, epochs=1, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_adamw_is_optax_adamw_with_the_weight_decay():
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
    grads = jax.tree.map(lambda p: 0.1 * p - 0.3, params)
    ours = make_optimizer("adamw", 1e-2, 0.3)
    theirs = optax.adamw(1e-2, weight_decay=0.3)
    got, _ = ours.update(grads, ours.init(params), params)
    want, _ = theirs.update(grads, theirs.init(params), params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    no_decay, _ = optax.adamw(1e-2, weight_decay=0.0).update(grads, theirs.init(params), params)
    assert not np.allclose(got["w"], no_decay["w"])  # the decay is there


def _sequences(n=14, T=4, features=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + 6, T, features)).astype(np.float32)
    y = (x[:, :, 0].sum(1) > 0).astype(np.int32) + (x[:, -1, 1] > 0)
    return Dataset(x[:n], y[:n], x[n:], y[n:], "classification", 3, "tiny sequences", "tiny-seq")


@pytest.mark.parametrize("grad", ["autodiff", "checked"])  # checked: manual, compared
def test_gru_trains_with_every_gradient_source_and_adamw(grad):
    ds = _sequences()
    r = fb.train("gru", ds, hidden=5, epochs=2, batch_size=4, grad=grad, check_every=1,
                 optimizer="adamw", lr=1e-2, weight_decay=0.5, seed=2)
    assert r.config.weight_decay == 0.5 and r.config.optimizer == "adamw"
    reference = plain_loop(r.net, "softmax_cross_entropy", ds.x_train,
                           np.eye(3, dtype=np.float32)[ds.y_train],
                           optax.adamw(1e-2, weight_decay=0.5), 4, 2, 2)
    for got, want in zip(jax.tree.leaves(r.params), jax.tree.leaves(reference)):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


def test_load_run_refuses_vocabulary_characters_edited_after_training(char_run, tmp_path):
    """Issue 21 item 5: main loaded the edited alphabet and sampled the wrong characters."""
    _, _, trained = char_run
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    saved = json.loads((out / "vocab.json").read_text())
    saved["vocab"][0], saved["vocab"][1] = saved["vocab"][1], saved["vocab"][0]
    (out / "vocab.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"its checksum file is intact, but .*the vocabulary or "
                                         r"window length in vocab.json"):
        fb.load_run(out)


def test_vocabulary_that_is_not_utf8_is_named(char_run, tmp_path):
    """Issue 21 item 4: main raised a bare "'utf-8' codec can't decode"."""
    _, _, trained = char_run
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    (out / "vocab.json").write_bytes(b"\xff\xfe\x00garbage")
    for action in (lambda: fb.load_run(out), lambda: fb.train(out=out, resume=True, epochs=3)):
        with pytest.raises(ValueError, match=r"vocab.json is damaged"):
            action()
