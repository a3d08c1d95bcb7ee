"""Tests for the Task contract (every registered task), learning on small tasks, and the
TaskFamily sampler and task groups of mapa_jax.tasks.base."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mapa_jax import tasks
from mapa_jax.architecture import check_graph_matches_params, module_paths

ALL_TASKS = tasks.task_names()
# One real init + loss + grad per kind of model / problem (conv2d + residual, conv1d,
# LayerNorm MLP, LASSO, sparse logistic regression); the rest are checked abstractly.
REPRESENTATIVE = [
    "digits/rescnn_relu_c8_2blocks", "mnist1d/conv1d_gelu_c16_c16_c16",
    "diabetes/mlp_layernorm_relu_3x32", "synthetic/lasso", "synthetic/sparse_logreg",
]


@functools.cache
def _initialized(name: str):
    """(task, params) with params from a real (jitted) init, shared by the tests."""
    task = tasks.get_task(name)
    return task, jax.jit(task.init)(jax.random.key(0))


# ------------------------------------------------------------ every task


@pytest.mark.parametrize("name", ALL_TASKS)
def test_task_contract_abstractly(name):
    """num_params, scalar loss, evaluate's documented keys, graph = one node per module (cached)."""
    task = tasks.get_task(name)
    assert task.name == name and task.kind in ("classification", "regression", "synthetic", "sequence", "reinforcement")
    params = jax.eval_shape(task.init, jax.random.key(0))
    assert task.num_params == sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    batch = jax.eval_shape(task.sample, jax.random.key(0))
    assert jax.eval_shape(task.loss, params, batch).shape == ()
    for split in tasks.SPLITS:
        out = jax.eval_shape(functools.partial(task.evaluate, split=split), params)
        assert tuple(sorted(out)) == tuple(sorted(task.info["metrics"]))
        assert all(v.shape == () for v in out.values())
    g = task.graph()
    assert g is task.graph()  # cached
    assert int(g.n_node[0]) == len(module_paths(params))
    if "param_layers" in task.info:  # zoo tasks: the documented number of layers
        assert int(g.n_node[0]) == task.info["param_layers"]
    check_graph_matches_params(g, params)


def test_every_sample_is_jittable_varies_with_the_key_and_has_the_batch_size():
    all_tasks = [tasks.get_task(n) for n in ALL_TASKS]
    sample_all = jax.jit(lambda k: [t.sample(k) for t in all_tasks])  # one compilation
    first, second = sample_all(jax.random.key(1)), sample_all(jax.random.key(2))
    for task, b1, b2 in zip(all_tasks, first, second):
        assert jax.tree.structure(b1) == jax.tree.structure(jax.eval_shape(task.sample, jax.random.key(0)))
        if task.kind == "sequence":  # one token array: inputs and next-token targets
            assert b1.shape == (task.info["batch_size"], task.info["length"]), task.name
            assert not np.array_equal(np.asarray(b1), np.asarray(b2)), task.name
        elif task.kind == "reinforcement":  # the keys of a batch of episodes
            assert b1.shape == (task.info["batch_size"],), task.name
            assert not np.array_equal(jax.random.key_data(b1), jax.random.key_data(b2)), task.name
        elif task.info["stochastic"]:
            x1, y1 = b1
            assert x1.shape[0] == y1.shape[0] == task.info["batch_size"], task.name
            assert not np.array_equal(np.asarray(x1), np.asarray(b2[0])), task.name
        else:
            assert b1 == (), task.name  # deterministic problems: nothing to draw


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_task_real_init_loss_grad_and_metrics_are_finite(name):
    task, p1 = _initialized(name)
    p2 = jax.jit(task.init)(jax.random.key(1))
    assert jax.tree.structure(p1) == jax.tree.structure(p2)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)))
    loss, grads = jax.jit(jax.value_and_grad(task.loss))(p1, task.sample(jax.random.key(2)))
    assert np.isfinite(loss)
    assert jax.tree.structure(grads) == jax.tree.structure(p1)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads)) > 0
    metrics = task.evaluate(p1, "validation")
    assert all(np.isfinite(v) for v in metrics.values())
    if "accuracy" in metrics:
        assert 0.0 <= metrics["accuracy"] <= 1.0


def test_minibatches_are_drawn_inside_a_jitted_scan():
    task, params = _initialized("diabetes/mlp_layernorm_relu_3x32")

    @jax.jit
    def losses(keys):
        return jax.lax.scan(lambda c, k: (c, task.loss(params, task.sample(k))), 0, keys)[1]

    out = np.asarray(losses(jax.random.split(jax.random.key(1), 8)))
    assert out.shape == (8,) and np.all(np.isfinite(out)) and np.unique(out).size > 1


def test_vmapped_inits_give_a_meta_batch():
    task = tasks.get_task(tasks.TINY_TASK)
    batch = jax.vmap(task.init)(jax.random.split(jax.random.key(0), 3))
    assert all(leaf.shape[0] == 3 for leaf in jax.tree.leaves(batch))


# --------------------------------------------------------------- learning


def _train(task, tx, steps, seed=0):
    @jax.jit
    def run(key):
        k_init, k_run = jax.random.split(key)
        params = task.init(k_init)

        def step(carry, k):
            params, state = carry
            loss, grads = jax.value_and_grad(task.loss)(params, task.sample(k))
            updates, state = tx.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), loss

        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)),
                                           jax.random.split(k_run, steps))
        return params, losses

    return run(jax.random.key(seed))


def test_adam_learns_a_classification_task():
    task = tasks.get_task("breast_cancer/mlp_tanh_1x16")
    params, losses = _train(task, optax.adam(1e-2), 150)
    after = task.evaluate(params, "test")
    assert float(after["loss"]) < 0.5 * float(jnp.mean(losses[:5]))
    assert float(after["accuracy"]) > 0.9


def test_sgd_learns_a_regression_task_with_positive_r2():
    task = tasks.get_task("diabetes/mlp_leaky_relu_4x16")
    params, losses = _train(task, optax.sgd(3e-2, momentum=0.9), 200)
    assert float(jnp.mean(losses[-20:])) < float(jnp.mean(losses[:20]))
    assert float(task.evaluate(params, "test")["r2"]) > 0.2


def test_tiny_task_is_tiny_and_gradient_descent_solves_it():
    task = tasks.get_task(tasks.TINY_TASK)
    assert task.num_params == 20 and task.info["for_unit_tests"]
    params, _ = _train(task, optax.sgd(0.5), 300)  # the loss is a mean over 4 instances
    assert float(task.evaluate(params, "train")["suboptimality"]) < 1e-6


# ------------------------------------------------------- families and groups


def test_a_family_samples_names_uniformly_within_its_curriculum_limit():
    fam = tasks.family("meta_train").by_size()
    sizes = [fam.build(n).num_params for n in fam.task_names]
    assert sizes == sorted(sizes) and set(fam.task_names) == set(tasks.family("meta_train").task_names)
    draws = [fam.sample(k, limit=3) for k in jax.random.split(jax.random.key(0), 300)]
    assert set(draws) == set(fam.task_names[:3])  # only the 3 smallest, each of them
    counts = np.array([draws.count(n) for n in fam.task_names[:3]])
    assert counts.min() > 60  # about 100 each
    assert fam.sample(jax.random.key(5)) == fam.sample(jax.random.key(5))  # a function of the key
    assert isinstance(fam.build(draws[0]), tasks.Task)


def test_family_errors_name_what_was_wrong():
    with pytest.raises(ValueError, match="non-empty sequence of task names"):
        tasks.TaskFamily("empty", ())
    with pytest.raises(ValueError, match="non-empty sequence of task names"):
        tasks.TaskFamily("str", tasks.TINY_TASK)
    with pytest.raises(ValueError, match="names a task twice"):
        tasks.TaskFamily("dup", (tasks.TINY_TASK, tasks.TINY_TASK))
    fam = tasks.family("smoke")
    with pytest.raises(KeyError, match="no task 'digits/mlp_relu_1x32' in family 'smoke'"):
        fam.build("digits/mlp_relu_1x32")
    with pytest.raises(ValueError, match=r"limit must be in \[1, 3\], got 0"):
        fam.sample(jax.random.key(0), limit=0)


def test_a_tasks_group_is_its_dataset_or_problem():
    assert tasks.task_group(tasks.get_task("digits/mlp_relu_1x32")) == "digits"
    assert tasks.task_group(tasks.get_task("synthetic/lasso_gaussian")) == "lasso"
    assert tasks.task_group(tasks.get_task(tasks.TINY_TASK)) == "quadratic"
