"""Tests for truncated unrolls and the TBPTT estimator: values, not speed."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mapa_jax as mj
from mapa_jax.meta import unroll
from mapa_jax.meta.estimators import TruncatedBackprop, make_estimator
from mapa_jax.meta.unroll import UnrollSpec
from mapa_jax.tasks.base import Task

KEY = np.asarray(jax.random.key_data(jax.random.key(3)))  # the estimator's key (TBPTT ignores it)
CFG = mj.MetaLearnerConfig(direction="adam", lstm_hidden=16, gnn_hidden=8, gnn_rounds=2, window=5, eta_max=0.05)


def tiny_task(width=8, n=64, seed=0) -> Task:
    """A two-layer regression net on fixed random data (test-only task)."""

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(nn.tanh(nn.Dense(width)(x)))

    model = Net()
    kx, kw = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (n, 4))
    y = jnp.sin(x @ jax.random.normal(kw, (4, 1)))

    def init(key):
        return model.init(key, x[:1])["params"]

    def sample(key):
        idx = jax.random.randint(key, (16,), 0, n)
        return x[idx], y[idx]

    def loss(p, b):
        return jnp.mean((model.apply({"params": p}, b[0]) - b[1]) ** 2)

    graph = mj.architecture_graph(model.apply, {"params": init(jax.random.key(0))}, x[:1])
    return Task("test/tiny", "regression", init, sample, loss, lambda p, s: {"loss": loss(p, (x, y))},
                lambda: graph, 6 * width + 1)


@pytest.fixture(scope="module")
def setup():
    task = tiny_task()
    meta = mj.init_meta_params(jax.random.key(0), CFG)
    state = unroll.init_inner_state(meta, CFG, task, jax.random.key(1))
    return task, meta, state


def _full_unroll_loss(meta, task, state, steps):
    """Backpropagation through the whole unroll, written as a plain Python loop."""
    tx = mj.mapa(meta, CFG, graph=task.graph())
    opt_state = state.opt_state._replace(film=tx.init(state.params).film)
    params, key = state.params, jax.random.wrap_key_data(state.key)
    for _ in range(steps):
        key, kb = jax.random.split(key)
        loss, g = jax.value_and_grad(task.loss)(params, task.sample(kb))
        u, opt_state = tx.update(jax.lax.stop_gradient(g), opt_state, params, value=jax.lax.stop_gradient(loss))
        params = optax.apply_updates(params, u)
    key, ke = jax.random.split(key)
    return task.loss(params, task.sample(ke)) / state.loss0


def test_truncation_with_h_equal_t_is_full_backpropagation(setup):
    task, meta, state = setup
    steps = 6
    g_trunc = jax.jit(jax.grad(lambda m: unroll.truncated_unroll(m, CFG, task, state, UnrollSpec(steps))[0]))(meta)
    g_full = jax.jit(jax.grad(lambda m: _full_unroll_loss(m, task, state, steps)))(meta)
    for a, b in zip(jax.tree.leaves(g_trunc), jax.tree.leaves(g_full)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-7)
    assert sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(g_full)) > 0


def test_checkpointing_changes_memory_not_values(setup):
    task, meta, state = setup
    steps = 64

    def grad_fn(policy):
        return jax.jit(jax.grad(lambda m: unroll.truncated_unroll(m, CFG, task, state, UnrollSpec(steps, checkpoint=policy))[0]))

    plain, remat = grad_fn(None), grad_fn("nothing_saveable")
    for a, b in zip(jax.tree.leaves(plain(meta)), jax.tree.leaves(remat(meta))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
    mem = {name: f.lower(meta).compile().memory_analysis().temp_size_in_bytes
           for name, f in (("plain", plain), ("remat", remat))}
    assert mem["remat"] < mem["plain"], mem


def test_truncations_continue_the_trajectory(setup):
    task, meta, state = setup
    _, (s1, _) = unroll.truncated_unroll(meta, CFG, task, state, UnrollSpec(5))
    _, (s2, _) = unroll.truncated_unroll(meta, CFG, task, s1, UnrollSpec(5))
    assert int(s2.step) == 10
    assert int(s2.opt_state.count) == 10


def test_validation_objective_is_the_validation_loss_at_the_end(setup):
    task, meta, state = setup
    # The same task with a validation split of its own (other inputs and targets).
    xv = jax.random.normal(jax.random.key(11), (32, 4))
    yv = jnp.cos(xv[:, :1])

    def evaluate(p, split):
        if split == "validation":
            w2, w1 = p["Dense_0"], p["Dense_1"]  # Dense_0 is the output layer (built first)
            pred = jnp.tanh(xv @ w1["kernel"] + w1["bias"]) @ w2["kernel"] + w2["bias"]
            return {"loss": jnp.mean((pred - yv) ** 2)}
        return task.evaluate(p, split)

    vtask = Task("test/tiny_val", task.kind, task.init, task.sample, task.loss, evaluate, task.graph, task.num_params)
    meta_loss, (new_state, _) = unroll.truncated_unroll(meta, CFG, vtask, state, UnrollSpec(4, objective="validation"))
    expected = evaluate(new_state.params, "validation")["loss"] / state.loss0
    np.testing.assert_allclose(meta_loss, expected, rtol=1e-6)
    final, _ = unroll.truncated_unroll(meta, CFG, vtask, state, UnrollSpec(4, objective="final"))
    assert abs(float(final) - float(meta_loss)) > 1e-4  # another number than the minibatch loss
    g = jax.grad(lambda m: unroll.truncated_unroll(m, CFG, vtask, state, UnrollSpec(4, objective="validation"))[0])(meta)
    norms = [float(jnp.abs(x).sum()) for x in jax.tree.leaves(g)]
    assert all(np.isfinite(norms)) and sum(norms) > 0


def test_tbptt_estimate_is_the_gradient_of_the_truncated_unroll(setup):
    task, meta, state = setup
    spec = UnrollSpec(4)
    est = TruncatedBackprop(CFG, spec)
    out = jax.jit(lambda m, s, k: est.estimate(m, s, task, k))(meta, state, jax.random.key(0))
    (loss, (new, aux)), g = jax.jit(jax.value_and_grad(
        lambda m: unroll.truncated_unroll(m, CFG, task, state, spec), has_aux=True))(meta)
    np.testing.assert_array_equal(out.meta_loss, loss)
    for a, b in zip(jax.tree.leaves((out.meta_grad, out.inner, out.aux)), jax.tree.leaves((g, new, aux))):
        np.testing.assert_array_equal(a, b)
    assert int(out.inner.step) == int(state.step) + 4


def test_invalid_horizon_objective_policy_or_estimator_raise(setup):
    task, meta, state = setup
    with pytest.raises(ValueError, match="horizon must be an integer >= 1"):
        UnrollSpec(0)
    with pytest.raises(ValueError, match="objective must be one of"):
        UnrollSpec(2, objective="best")
    with pytest.raises(ValueError, match="checkpoint must be one of"):
        UnrollSpec(2, checkpoint="all")
    with pytest.raises(ValueError, match="second_order must be True or False"):
        UnrollSpec(2, second_order=1)
    with pytest.raises(TypeError, match="spec must be an UnrollSpec"):
        unroll.truncated_unroll(meta, CFG, task, state, 2)
    with pytest.raises(ValueError, match="unknown meta-gradient estimator 'pess'.*tbptt"):
        make_estimator("pess", CFG, UnrollSpec(2))


# ------------------------------------------------- the regularized (SAM, GSAM, GAM) objectives


def test_regularized_losses_of_a_quadratic_by_hand_in_float64():
    with jax.enable_x64(True):
        a = np.array([[3.0, 0.5], [0.5, 1.0]])
        params = {"x": jnp.array([0.7, -1.2])}

        def loss(p):
            return 0.5 * p["x"] @ jnp.asarray(a) @ p["x"]

        x = np.array([0.7, -1.2])
        rho, w = 0.1, 0.3
        g = a @ x
        xe = x + rho * g / np.linalg.norm(g)
        value, sam = 0.5 * x @ a @ x, 0.5 * xe @ a @ xe
        expect = {"sam": sam, "gsam": sam + w * (sam - value), "gam": value + w * rho * np.linalg.norm(a @ xe)}
        for objective, ref in expect.items():
            got = float(unroll.regularized_loss(loss, params, objective, rho, w))
            np.testing.assert_allclose(got, ref, rtol=1e-12, err_msg=objective)
        assert expect["sam"] > value  # the perturbation goes uphill
        with pytest.raises(ValueError, match="regularized_loss: objective must be one of"):
            unroll.regularized_loss(loss, params, "final", rho, w)


@pytest.mark.parametrize("objective", unroll.REGULARIZED_OBJECTIVES)
def test_regularized_objectives_score_the_end_point_and_have_meta_gradients(objective):
    from mapa_jax import tasks

    task = tasks.get_task(tasks.TINY_TASK)  # deterministic: the score does not depend on the batch
    meta = mj.init_meta_params(jax.random.key(0), CFG)
    state = unroll.init_inner_state(meta, CFG, task, jax.random.key(1))
    spec = UnrollSpec(horizon=3, objective=objective, checkpoint=None, rho=0.05, regularizer_weight=0.2)
    (value, (new, _)), grads = jax.jit(jax.value_and_grad(
        lambda m: unroll.truncated_unroll(m, CFG, task, state, spec), has_aux=True))(meta)
    ref = unroll.regularized_loss(task.loss, new.params, objective, 0.05, 0.2) / state.loss0
    np.testing.assert_allclose(float(value), float(ref), rtol=1e-5)
    flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(grads)])
    assert np.all(np.isfinite(flat)) and np.any(flat != 0)


@pytest.mark.parametrize("kw, match", [
    (dict(objective="sharp"), r"UnrollSpec: objective must be one of \('final', 'mean', 'validation', 'sam'"),
    (dict(rho=0.0), r"UnrollSpec: rho must be a finite number > 0"),
    (dict(regularizer_weight=-1.0), r"UnrollSpec: regularizer_weight must be a finite number >= 0"),
])
def test_bad_regularized_objective_settings_are_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        UnrollSpec(horizon=2, **kw)


def test_meta_train_config_names_the_regularizer_fields():
    from mapa_jax.meta.config import preset

    assert preset("smoke", objective="gsam", sharpness_rho=0.1).unroll_spec.rho == 0.1
    with pytest.raises(ValueError, match=r"MetaTrainConfig\.sharpness_rho must be a finite number > 0"):
        preset("smoke", sharpness_rho=float("nan"))
    with pytest.raises(ValueError, match=r"MetaTrainConfig\.regularizer_weight must be a finite number >= 0"):
        preset("smoke", regularizer_weight="0.1")
