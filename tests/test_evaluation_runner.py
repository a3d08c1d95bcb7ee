"""Tests for the one runner (mapa_jax/evaluation/runner.py): run_seeds is, seed by
seed, the plain training loop from the seed's keys."""

import jax
import numpy as np
import optax
import pytest

import mapa_jax as mj
from conftest import EVAL_SEEDS, EVAL_T
from mapa_jax import evaluation, tasks


def _loop(tx, task, seed, steps):
    """The training loop written out: key(EVAL_SEED_OFFSET + seed) -> (init key, minibatch keys)."""
    k_init, k_run = jax.random.split(jax.random.key(evaluation.EVAL_SEED_OFFSET + seed))
    params = task.init(k_init)
    state = tx.init(params)

    @jax.jit
    def step(params, state, k):
        loss, grads = jax.value_and_grad(task.loss)(params, task.sample(k))
        updates, state = tx.update(grads, state, params, value=loss)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for k in jax.random.split(k_run, steps):
        params, state, loss = step(params, state, k)
        losses.append(float(loss))
    return params, np.asarray(losses)


def test_run_seeds_is_the_training_loop_seed_by_seed():
    task = tasks.get_task(tasks.TINY_TASK)
    tx = mj.prox_adam(1e-1, l1=1e-2)  # strong enough to zero some entries
    records = evaluation.run_seeds(lambda task: tx, task, list(EVAL_SEEDS), EVAL_T)
    assert [r["seed"] for r in records] == list(EVAL_SEEDS) and {r["task"] for r in records} == {task.name}
    for seed, rec in zip(EVAL_SEEDS, records):
        params, losses = _loop(tx, task, seed, EVAL_T)
        np.testing.assert_allclose(rec["losses"], losses, rtol=1e-5, atol=1e-7)
        for split in ("train", "validation", "test"):
            want = task.evaluate(params, split)
            assert rec["metrics"][split].keys() == want.keys()
            for k in want:
                assert rec["metrics"][split][k] == pytest.approx(float(want[k]), rel=1e-5, abs=1e-7)
        weights = [np.asarray(p) for p in jax.tree.leaves(params) if np.ndim(p) >= 2]
        zeros = sum(int(np.sum(np.abs(w) < evaluation.SPARSITY_THRESHOLD)) for w in weights)
        assert rec["sparsity"] == pytest.approx(zeros / sum(w.size for w in weights))
        assert rec["finite"] and 1 <= rec["steps_to_95"] <= EVAL_T


def test_traced_meta_params_run_as_the_constant_optimizer(eval_result):
    """MapaFactory with the meta-params as traced hparams == mapa built on the constants."""
    _, task, meta, config = eval_result
    traced = evaluation.run_seeds(evaluation.MapaFactory(config), task, list(EVAL_SEEDS), EVAL_T, hparams=meta)
    fixed = evaluation.run_seeds(lambda t: mj.mapa(meta, config, graph=t.graph()), task, list(EVAL_SEEDS), EVAL_T)
    for a, b in zip(traced, fixed):
        np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-5, atol=1e-7)
        assert a["metrics"]["test"]["loss"] == pytest.approx(b["metrics"]["test"]["loss"], rel=1e-5)


def test_run_seeds_rejects_no_seeds():
    with pytest.raises(ValueError, match="seeds is empty"):
        evaluation.run_seeds(lambda task: optax.sgd(0.1), tasks.get_task(tasks.TINY_TASK), [], 5)
