"""Tests for the sequence tasks (mapa_jax/tasks/sequence.py): synthetic languages built
offline and deterministically, and a causal transformer task on them."""

import jax
import numpy as np
import optax
import pytest

from mapa_jax import tasks
from mapa_jax.meta.config import PRESETS
from mapa_jax.tasks import sequence


def test_markov_language_is_deterministic_sparse_and_split():
    a, b = sequence.markov_language(vocab=8, length=12, successors=2), sequence.markov_language(vocab=8, length=12, successors=2)
    for split in tasks.SPLITS:
        np.testing.assert_array_equal(a.tokens[split], b.tokens[split])
    assert [a.tokens[s].shape for s in tasks.SPLITS] == [(n, 12) for n in sequence.SPLIT_SIZES]
    seq = np.concatenate([a.tokens[s] for s in tasks.SPLITS])
    assert seq.min() >= 0 and seq.max() < 8 and seq.dtype == np.int32
    pairs = {(x, y) for row in seq for x, y in zip(row[:-1], row[1:])}
    for tok in range(8):  # each token is followed by at most `successors` tokens
        assert len({y for x, y in pairs if x == tok}) <= 2
    assert not np.array_equal(a.tokens["train"], sequence.markov_language(vocab=8, length=12, successors=2,
                                                                          seed=1).tokens["train"])


def test_copy_language_repeats_its_prefix_and_counts_only_the_copy():
    lang = sequence.copy_language(vocab=5, prefix=3)
    seq = lang.tokens["test"]
    assert seq.shape[1] == 7 and np.all(seq[:, 3] == 0) and seq[:, :3].min() >= 1
    np.testing.assert_array_equal(seq[:, :3], seq[:, 4:])
    np.testing.assert_array_equal(lang.weights, [0, 0, 0, 1, 1, 1])  # targets seq[:, 4:] and the separator's successor


def test_a_transformer_task_trains_and_its_graph_has_attention_and_norms():
    task = tasks.get_task("markov/transformer_d16_l1")
    assert task.kind == "sequence" and task in tasks.family("sequence").tasks
    params = task.init(jax.random.key(0))
    assert task.num_params == sum(x.size for x in jax.tree.leaves(params))
    batch = task.sample(jax.random.key(1))
    assert batch.shape == (32, 32) and batch.dtype == np.int32
    np.testing.assert_array_equal(task.sample(jax.random.key(1)), batch)
    start = task.evaluate(params, "test")
    assert float(start["loss"]) > 0.9 * np.log(16)  # no better than uniform at init
    tx = optax.adam(3e-3)

    @jax.jit
    def step(p, s, k):
        g = jax.grad(task.loss)(p, task.sample(k))
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    p, s = params, tx.init(params)
    for k in jax.random.split(jax.random.key(2), 30):
        p, s = step(p, s, k)
    assert float(task.evaluate(p, "test")["loss"]) < float(start["loss"]) - 0.3
    graph = task.graph()
    assert graph.nodes.shape[0] == len({path[:-1] for path in _paths(params)})


def test_sort_language_sorts_its_prefix_and_counts_only_the_sorted_part():
    lang = sequence.sort_language(vocab=6, prefix=4, seed=2)
    seq = lang.tokens["train"]
    assert seq.shape == (sequence.SPLIT_SIZES[0], 9) and np.all(seq[:, 4] == 0) and seq[:, :4].min() >= 1
    np.testing.assert_array_equal(np.sort(seq[:, :4], axis=1), seq[:, 5:])
    assert not np.array_equal(seq[:, :4], seq[:, 5:])  # not already sorted: the task is not a copy
    np.testing.assert_array_equal(lang.weights, [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(sequence.sort_language(vocab=6, prefix=4, seed=2).tokens["test"], lang.tokens["test"])


def test_meta_train_wide_adds_the_training_transformers_and_no_held_out_task():
    wide, base = tasks.family("meta_train_wide").task_names, tasks.family("meta_train").task_names
    train_seq = tasks.family("sequence_train").task_names
    assert wide == base + train_seq and len(train_seq) == 2
    assert {tasks.get_task(n).kind for n in train_seq} == {"sequence"}
    for held_out in ("meta_test", "sequence", "rl"):
        assert not set(wide) & set(tasks.family(held_out).task_names), held_out
    # other languages than the held-out ones (not only other names)
    train_groups = {tasks.get_task(n).info["group"] for n in train_seq}
    assert not train_groups & {t.info["group"] for t in tasks.family("sequence").tasks}
    for name, cfg in PRESETS.items():  # no preset meta-trains on a held-out family
        assert cfg.tasks not in ("meta_test", "sequence", "rl"), name


def _paths(tree):
    return [tuple(str(k) for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)]


@pytest.mark.parametrize("make, match", [
    (lambda: sequence.markov_language(vocab=1), "vocab >= 2"),
    (lambda: sequence.markov_language(vocab=4, successors=5), "successors"),
    (lambda: sequence.copy_language(prefix=0), "prefix >= 1"),
    (lambda: sequence.sort_language(vocab=2), "sort_language: need vocab >= 3"),
    (lambda: sequence.sequence_task("x", sequence.CausalTransformer(8, 11), sequence.markov_language(vocab=16, length=12)),
     "vocab 8 is not the language's 16"),
])
def test_bad_sequence_arguments_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()
