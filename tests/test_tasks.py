"""Tests for mapa_jax.tasks: datasets, the model zoo and its split, every task's contract,
learning on a small task, synthetic optima, and errors for bad names."""

from __future__ import annotations

import functools
import random
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mapa_jax import tasks
from mapa_jax.architecture import NODE_FEATURES, check_graph_matches_params, module_paths
from mapa_jax.tasks import datasets, models, synthetic, zoo

SOURCE_ROWS = {"digits": 1797, "breast_cancer": 569, "mnist1d": 5000, "boston": 506, "diabetes": 442}
ALL_TASKS = tasks.task_names()
# One real init + loss + grad per kind of model / problem (conv2d + residual, conv1d,
# LayerNorm MLP, LASSO, sparse logistic regression); the rest are checked abstractly.
REPRESENTATIVE = [
    "digits/rescnn_relu_c8_2blocks", "mnist1d/conv1d_gelu_c16_c16_c16",
    "diabetes/mlp_layernorm_relu_3x32", "synthetic/lasso", "synthetic/sparse_logreg",
]
WITH_OPTIMUM = ["synthetic/lasso", "synthetic/lasso_gaussian", "synthetic/quadratic",
                "synthetic/rosenbrock", "synthetic/sparse_logreg", tasks.TINY_TASK]


@functools.cache
def _initialized(name: str):
    """(task, params) with params from a real (jitted) init, shared by the tests."""
    task = tasks.get_task(name)
    return task, jax.jit(task.init)(jax.random.key(0))


def _graph_column(graph, name: str) -> np.ndarray:
    return np.asarray(graph.nodes)[:, NODE_FEATURES.index(name)]


# ------------------------------------------------------------------ datasets


@pytest.mark.parametrize("name", datasets.dataset_names())
def test_dataset_shapes_dtypes_and_no_nan(name):
    d = tasks.load_dataset(name)
    assert sum(len(d.y[s]) for s in tasks.SPLITS) == SOURCE_ROWS[name]
    for s in tasks.SPLITS:
        x, y = d.x[s], d.y[s]
        assert x.dtype == np.float32 and x.shape == (len(y), *d.input_shape)
        assert np.all(np.isfinite(x)) and np.all(np.isfinite(y))
        if d.kind == "classification":
            assert y.dtype == np.int32 and y.min() >= 0 and y.max() < d.num_classes
        else:
            assert y.dtype == np.float32 and d.num_outputs == 1
    if d.kind == "classification":  # every class is seen in training
        assert set(np.unique(d.y["train"])) == set(range(d.num_classes))


@pytest.mark.parametrize("name", datasets.dataset_names())
def test_dataset_splits_are_disjoint_cover_all_rows_and_are_60_20_20(name):
    d = tasks.load_dataset(name)
    idx = [set(d.indices[s].tolist()) for s in tasks.SPLITS]
    assert not (idx[0] & idx[1]) and not (idx[0] & idx[2]) and not (idx[1] & idx[2])
    assert set().union(*idx) == set(range(SOURCE_ROWS[name]))
    fractions = np.array([len(i) for i in idx]) / SOURCE_ROWS[name]
    np.testing.assert_allclose(fractions, datasets.SPLIT_FRACTIONS, atol=0.01)


@pytest.mark.parametrize("name", datasets.dataset_names())
def test_dataset_is_deterministic_and_leaves_global_rngs_alone(name):
    np.random.seed(123)
    random.seed(123)
    expect_np, expect_py = np.random.get_state()[1].copy(), random.getstate()
    fresh = datasets._LOADERS[name]()  # uncached rebuild
    assert np.array_equal(np.random.get_state()[1], expect_np) and random.getstate() == expect_py
    cached = tasks.load_dataset(name)
    assert cached is tasks.load_dataset(name)
    for s in tasks.SPLITS:
        np.testing.assert_array_equal(fresh.indices[s], cached.indices[s])
        np.testing.assert_array_equal(fresh.x[s], cached.x[s])
        np.testing.assert_array_equal(fresh.y[s], cached.y[s])


@pytest.mark.parametrize("name", datasets.dataset_names())
def test_features_are_standardized_with_train_statistics(name):
    d = tasks.load_dataset(name)
    x = d.x["train"].reshape(len(d.x["train"]), -1).astype(np.float64)
    np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-5)
    std = x.std(0)
    varying = d.feature_std.reshape(-1) != 1.0  # constant-on-train features are only centred
    np.testing.assert_allclose(std[varying], 1.0, rtol=1e-4)
    np.testing.assert_allclose(std[~varying], 0.0, atol=1e-6)
    if d.kind == "regression":
        assert abs(d.y["train"].mean()) < 1e-5 and abs(d.y["train"].std() - 1.0) < 1e-4
    # Held-out splits use the train statistics, so they are not exactly standardized.
    held = d.x["test"].reshape(len(d.x["test"]), -1)
    assert not np.allclose(held.mean(0), 0.0, atol=1e-5)


def test_split_indices_are_fixed_by_the_seed():
    a, b = datasets.split_indices(100), datasets.split_indices(100)
    for s in tasks.SPLITS:
        np.testing.assert_array_equal(a[s], b[s])
    assert not np.array_equal(datasets.split_indices(100, seed=1)["train"], a["train"])


# ----------------------------------------------------------------- model zoo


def test_zoo_has_20_unique_architectures_split_15_5():
    assert len(zoo.ZOO) >= 20
    names = tasks.architecture_names()
    assert len(names) == len(set(names))
    assert len({a.task_name for a in zoo.ZOO}) == len(zoo.ZOO)
    assert len(zoo.META_TRAIN) == 15 and len(zoo.META_TEST) == 5
    assert {a.name for a in zoo.META_TRAIN}.isdisjoint({a.name for a in zoo.META_TEST})
    assert {a.family for a in zoo.ZOO} >= {"mlp", "resmlp", "cnn", "vgg", "rescnn", "conv1d"}
    assert {a.activation for a in zoo.ZOO} >= {"relu", "swish", "leaky_relu", "tanh", "gelu"}


def test_meta_test_architectures_have_their_documented_novelty():
    train = zoo.META_TRAIN
    for arch in zoo.META_TEST:
        assert arch.novelty, arch.name
        for prop, value in arch.novelty:
            if prop == "activation":
                assert arch.activation == value
                assert all(a.activation != value for a in train), arch.name
            elif prop == "block":
                assert value in arch.blocks
                assert all(value not in a.blocks for a in train), arch.name
            elif prop == "conv_depth":
                assert arch.conv_layers == int(value) > max(a.conv_layers for a in train)
            elif prop == "conv1d_depth":
                seen = max(a.conv_layers for a in train if "conv1d" in a.blocks)
                assert arch.conv_layers == int(value) > seen
            else:
                pytest.fail(f"undocumented novelty kind {prop!r}")


def test_meta_test_graphs_differ_in_kind_from_every_meta_train_graph():
    """Only meta-test graphs hold GELU nodes, norm nodes, or skip edges between two convs."""

    def traits(task_name):
        g = tasks.get_task(task_name).graph()
        conv = _graph_column(g, "kind_conv") > 0
        skip = np.asarray(g.edges)[:, 1] > 0 if g.edges.shape[0] else np.zeros(0, bool)
        s, r = np.asarray(g.senders), np.asarray(g.receivers)
        return {"gelu": bool(_graph_column(g, "act_gelu").any()),
                "norm": bool(_graph_column(g, "kind_norm").any()),
                "conv_skip": bool(np.any(skip & conv[s] & conv[r])),
                "convs": int(conv.sum())}

    train = [traits(a.task_name) for a in zoo.META_TRAIN]
    test = {a.name: traits(a.task_name) for a in zoo.META_TEST}
    assert not any(t["gelu"] or t["norm"] or t["conv_skip"] for t in train)
    max_convs = max(t["convs"] for t in train)
    for name, t in test.items():
        assert t["gelu"] or t["norm"] or t["conv_skip"] or t["convs"] > max_convs, name


def test_zoo_docstring_tables_list_every_task_with_its_parameter_count():
    rows = {}
    for line in zoo.__doc__.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 6 and "/" in cells[1]:
            rows[cells[1]] = int(cells[5])
    assert set(rows) == {a.task_name for a in zoo.ZOO}
    for arch in zoo.ZOO:
        task = tasks.get_task(arch.task_name)
        assert rows[arch.task_name] == task.num_params, arch.task_name
        assert task.info["param_layers"] == arch.param_layers


def test_flat_kernel_init_has_flax_lecun_normal_statistics():
    shape = (3, 3, 16, 64)
    ours = np.asarray(models.lecun_normal_flat(jax.random.key(0), shape))
    assert ours.shape == shape
    np.testing.assert_allclose(ours.std(), (3 * 3 * 16) ** -0.5, rtol=0.03)  # variance 1/fan_in
    assert np.abs(ours).max() <= 2 * (3 * 3 * 16) ** -0.5 / 0.87962566 + 1e-6


# ------------------------------------------------------------ every task


@pytest.mark.parametrize("name", ALL_TASKS)
def test_task_contract_abstractly(name):
    """num_params, scalar loss, evaluate's documented keys, graph = one node per module (cached)."""
    task = tasks.get_task(name)
    assert task.name == name and task.kind in ("classification", "regression", "synthetic")
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
        if task.info["stochastic"]:
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


# ------------------------------------------------------------- synthetic


@pytest.mark.parametrize("name", WITH_OPTIMUM)
def test_suboptimality_is_zero_at_the_computed_optimum(name):
    task = tasks.get_task(name)
    assert task.info["kkt_residual"] < 1e-6
    opt = task.info["optimum"]
    assert jax.tree.structure(opt) == jax.tree.structure(jax.eval_shape(task.init, jax.random.key(0)))
    out = task.evaluate(opt, "train")
    assert abs(float(out["suboptimality"])) < 1e-5 * max(1.0, task.info["min_loss"])
    start = task.evaluate(jax.jit(task.init)(jax.random.key(0)), "train")
    assert float(start["suboptimality"]) > 1e-2


def test_adam_does_not_beat_the_computed_lasso_optimum():
    task = tasks.get_task("synthetic/lasso")
    params, _ = _train(task, optax.adam(1e-2), 200)
    sub = float(task.evaluate(params, "train")["suboptimality"])
    assert -1e-5 < sub < 0.5  # it made progress (from about 1.5) but cannot pass F*


def test_lasso_optimum_is_sparse_and_the_composite_parts_add_up():
    task = tasks.get_task("synthetic/lasso")
    x = np.asarray(task.info["optimum"]["x"])
    assert np.mean(x == 0.0) > 0.05
    p = jax.jit(task.init)(jax.random.key(0))

    @jax.jit
    def parts(p):
        l1_term = task.info["l1"] * jnp.mean(jnp.sum(jnp.abs(p["x"]), -1))
        return task.loss(p, ()), task.info["smooth_loss"](p) + l1_term

    total, split = parts(p)
    np.testing.assert_allclose(total, split, rtol=1e-6)


def test_lasso_distributions_differ():
    a = tasks.get_task("synthetic/lasso").info["distribution"]
    b = tasks.get_task("synthetic/lasso_gaussian").info["distribution"]
    assert a == "uniform_mixture" and b == "gaussian"
    with pytest.raises(ValueError, match="uniform_mixture"):
        synthetic.lasso(distribution="cauchy")


# ---------------------------------------------------------- registry, errors


def test_families_have_the_documented_sizes_and_tasks_are_cached():
    assert len(tasks.meta_train_tasks().tasks) == 15
    assert len(tasks.meta_test_tasks().tasks) == 5
    assert {t.name for t in tasks.synthetic_tasks().tasks} >= {
        "synthetic/lasso", "synthetic/quadratic", "synthetic/rosenbrock", "synthetic/sparse_logreg"}
    for name in tasks.family_names():
        fam = tasks.family(name)
        assert fam.name == name and fam.sample(jax.random.key(0)) in fam.tasks
    assert tasks.family("meta_train").tasks[0] is tasks.meta_train_tasks().tasks[0]
    assert tasks.get_task(tasks.TINY_TASK) in tasks.family("smoke").tasks
    assert set(tasks.family_names()) >= {"meta_train", "meta_test", "synthetic"}


def test_bad_names_raise_errors_listing_the_known_names():
    with pytest.raises(KeyError, match=re.escape("digits/mlp_relu_1x32")):
        tasks.get_task("digits/no_such_model")
    with pytest.raises(KeyError, match="meta_train"):
        tasks.family("meta_validation")
    with pytest.raises(KeyError, match="boston"):
        tasks.load_dataset("mnist")
    with pytest.raises(KeyError, match="mlp_relu_1x32"):
        tasks.get_architecture("transformer")
    task = tasks.get_task(tasks.TINY_TASK)
    with pytest.raises(ValueError, match="validation"):
        task.evaluate(task.init(jax.random.key(0)), "valid")
