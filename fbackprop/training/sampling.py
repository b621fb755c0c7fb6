"""Sampling text from a trained character model (a transformer trained on ``text:PATH``).

Generation is autoregressive: the next token is drawn from softmax(logits / temperature) at the
last position of the context, appended, and the context slides once it is ``max_len`` long. The
context sits left-aligned in a fixed window of ``max_len`` tokens, the rest padded: causal
attention makes position i read positions ≤ i only, so the padding never changes the logits
read, and one compiled step serves every context length.
"""
from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from ..inputs import require_int, require_number
from ..network import Network
from .load import load_run
from .rundir import read_vocab

__all__ = ["sample_tokens", "sample_text", "clear_cache"]


def sample_tokens(net: Network, params, prompt, length: int, key, *, max_len: int,
                  temperature: float = 1.0) -> np.ndarray:
    """Continue ``prompt`` by ``length`` tokens drawn from the network's next-token distribution.

    Args:
      net: a causal sequence model taking (1, max_len) token ids to (1, max_len, V) logits
        (:func:`fbackprop.transformer`).
      params: its parameters.
      prompt: the token ids to start from, a non-empty 1-D sequence of ints in [0, V).
      length: how many tokens to add, an int ≥ 0.
      key: a ``jax.random`` key (the draws are a pure function of it).
      max_len: the longest context the network reads (its positional table's length).
      temperature: divides the logits; smaller is more conservative, 0 takes the most likely
        token every time.

    Returns:
      int32 array: the prompt followed by the ``length`` new tokens.

    Raises:
      ValueError: an empty prompt, a negative length or temperature.
    """
    length = require_int(length, "length", minimum=0, who="sample_tokens")
    temperature = require_number(temperature, "temperature", minimum=0.0, who="sample_tokens")
    max_len = require_int(max_len, "max_len", minimum=1, who="sample_tokens")
    tokens = [int(t) for t in np.asarray(prompt).reshape(-1)]
    if not tokens:
        raise ValueError("sample_tokens: expected a prompt of at least one token, received an "
                         "empty one; start from e.g. a newline's id.")
    step = _next_token(net, temperature)
    for i in range(length):
        context = tokens[-max_len:]
        window = np.zeros((1, max_len), np.int32)
        window[0, :len(context)] = context
        tokens.append(int(step(params, window, len(context) - 1, jax.random.fold_in(key, i))))
    return np.asarray(tokens, np.int32)


@functools.lru_cache(maxsize=8)
def _next_token(net, temperature):
    """The jitted draw of the token after position ``last`` of a (1, max_len) window, cached per
    network and temperature (jit compiles it once per window length). :func:`load_run` builds a
    registry network once per recipe, so sampling one run again reuses it; :func:`clear_cache`
    empties it."""

    def step(params, window, last, key):
        logits = net.apply(params, window)[0, last]
        if temperature == 0:
            return jnp.argmax(logits)
        return jax.random.categorical(key, logits / temperature)

    return jax.jit(step)


def sample_text(out, prompt=None, length: int = 200, *, temperature: float = 1.0,
                seed: int = 0) -> str:
    """Text from the character model trained in the run directory ``out``.

    Args:
      out: a run directory of ``model="transformer"`` on ``data="text:PATH"``; its network is
        rebuilt from its config and ``vocab.json`` (the corpus is not needed) with the newest
        verified checkpoint.
      prompt: the text to continue, made of characters of the corpus (default: a newline when
        the corpus has one, else its first character).
      length: characters to add, an int ≥ 0.
      temperature: see :func:`sample_tokens`.
      seed: seeds the draws.

    Returns:
      The prompt followed by ``length`` sampled characters.

    Raises:
      ValueError: ``out`` is no directory, holds no character-model run or no readable
        checkpoint, or the prompt uses characters the corpus does not have.
    """
    if not pathlib.Path(out).is_dir():
        raise ValueError(f"sample: no run directory at {out} (it does not exist or is not a "
                         f"directory). Pass the --out DIR of a character model's training run.")
    saved = read_vocab(out)
    if saved is None or not all(len(t) == 1 for t in saved["vocab"]):
        what = ("no vocab.json: it did not train on token sequences" if saved is None else
                f"its tokens are not characters (data {saved['data']!r})")
        raise ValueError(f"sample: {out} holds no character model ({what}). Train one with "
                         f"fbackprop train --model transformer --data text:PATH --out DIR.")
    vocab = saved["vocab"]
    lookup = {c: i for i, c in enumerate(vocab)}
    if prompt is None:
        prompt = "\n" if "\n" in lookup else vocab[0]
    unknown = sorted(set(prompt) - set(lookup))
    if unknown:
        raise ValueError(f"sample: the prompt uses characters the corpus does not have: "
                         f"{''.join(unknown)!r}; use characters from its vocabulary of "
                         f"{len(vocab)} ({''.join(vocab)!r}).")
    if not prompt:
        raise ValueError("sample: expected a prompt of at least one character, received ''; "
                         "leave it out to start from a newline.")
    net, params, config = load_run(out)
    seed = require_int(seed, "seed", minimum=0, maximum=2**32 - 1, who="sample")
    ids = sample_tokens(net, params, [lookup[c] for c in prompt], length,
                        jax.random.PRNGKey(seed), max_len=saved["seq_len"],
                        temperature=temperature)
    return "".join(vocab[i] for i in ids)


def clear_cache():
    """Forget the compiled sampling steps."""
    _next_token.cache_clear()
