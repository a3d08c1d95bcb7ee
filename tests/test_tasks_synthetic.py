"""Tests for mapa_jax.tasks.synthetic: computed optima, LASSO structure, distributions."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mapa_jax import tasks
from mapa_jax.tasks import synthetic
from test_tasks_base import _train  # the jitted training scan shared with the learning tests

WITH_OPTIMUM = ["synthetic/lasso", "synthetic/lasso_gaussian", "synthetic/quadratic",
                "synthetic/rosenbrock", "synthetic/sparse_logreg", tasks.TINY_TASK]


@functools.cache
def _initialized(name: str):
    """(task, params) with params from a real (jitted) init, shared by the tests."""
    task = tasks.get_task(name)
    return task, jax.jit(task.init)(jax.random.key(0))


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
