"""Tests for the reinforcement-learning tasks (mapa_jax/tasks/rl.py): REINFORCE on gymnax
classic control, its stop-gradient loss, fixed evaluation episodes and the held-out "rl" family.

Short episodes (L = 20, N = 4) built with the module's builder keep every compilation small."""

import functools
import socket

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mapa_jax import tasks
from mapa_jax.architecture import check_graph_matches_params
from mapa_jax.tasks import rl

L, N = 20, 4


@functools.cache
def _small(env_id: str, reward: str):
    return rl.policy_gradient_task(f"test/{env_id}/{reward}", env_id, reward=reward, length=L,
                                   num_episodes=N, eval_episodes=8)


SMALL = [("CartPole-v1", "balance"), ("Acrobot-v1", "height")]


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@functools.cache
def _probe(env_id: str, reward: str):
    """One compiled program per task: episodes, loss and three gradients on fixed keys (seeds 0..2).

    Returns ``(task, params, run, runs)``: ``run(params, keys)`` and its results on those keys."""
    task = _small(env_id, reward)
    r_lo, r_hi = task.info["return_bounds"]

    def reinforce(params, keys):  # an independent surrogate: explicit leave-one-out baselines
        log_probs, rewards, alive = task.info["episodes"](params, keys)
        to_go = jax.lax.stop_gradient(jnp.flip(jnp.cumsum(jnp.flip(rewards, 1), 1), 1))
        others = jnp.stack([jnp.delete(to_go, i, axis=0, assume_unique_indices=True).mean(0) for i in range(N)])
        return -jnp.mean(jnp.sum(alive * (to_go - others) * log_probs, axis=1)) / (r_hi - r_lo)

    @jax.jit
    def run(params, keys):
        return {"episodes": task.info["episodes"](params, keys), "loss": task.loss(params, keys),
                "grad_loss": jax.grad(task.loss)(params, keys),
                "grad_surrogate": jax.grad(task.info["surrogate"])(params, keys),
                "grad_reinforce": jax.grad(reinforce)(params, keys)}

    params = jax.jit(task.init)(jax.random.key(0))
    return task, params, run, [jax.device_get(run(params, task.sample(jax.random.key(s)))) for s in range(3)]


def test_building_and_tracing_a_task_needs_no_network(monkeypatch):
    """Building runs gymnax.make; tracing runs every Python line of init, sample, loss and
    evaluate (the compiled programs that run later are XLA, with no I/O)."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    task = rl.policy_gradient_task("offline", "Acrobot-v1", reward="height", length=5, num_episodes=2,
                                   eval_episodes=2)
    params = jax.eval_shape(task.init, jax.random.key(0))
    assert jax.eval_shape(jax.value_and_grad(task.loss), params, jax.eval_shape(task.sample, jax.random.key(1)))
    assert set(jax.eval_shape(lambda p: task.evaluate(p, "test"), params)) == set(task.info["metrics"])


@pytest.mark.parametrize("env_id, reward", SMALL)
def test_episodes_have_the_documented_shapes_rewards_and_termination_mask(env_id, reward):
    task, _, _, runs = _probe(env_id, reward)
    spec = rl.REWARDS[(env_id, reward)]
    keys = task.sample(jax.random.key(1))
    assert keys.shape == (N,) and jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key)
    for run in runs:
        log_probs, rewards, alive = run["episodes"]
        assert log_probs.shape == rewards.shape == alive.shape == (N, L)
        assert np.all(log_probs <= 0) and np.all(np.isfinite(log_probs))
        assert np.all(rewards >= spec.low) and np.all(rewards <= spec.high)
        assert np.all(alive[:, 0] == 1) and np.all(np.diff(alive, axis=1) <= 0)  # alive until the first termination
        np.testing.assert_array_equal(rewards[alive == 0], spec.after_termination)
    assert task.kind == rl.KIND == "reinforcement" and task.info["metrics"] == ("loss", "return", "steps_to_termination")


@pytest.mark.parametrize("env_id, reward", SMALL)
def test_value_is_the_normalized_shortfall_of_the_mean_return_in_0_1(env_id, reward):
    task, _, _, runs = _probe(env_id, reward)
    spec = rl.REWARDS[(env_id, reward)]
    r_lo, r_hi = task.info["return_bounds"]
    assert (r_lo, r_hi) == (L * spec.low, L * spec.high)
    for run in runs:
        returns = run["episodes"][1].sum(axis=1)
        np.testing.assert_allclose(run["loss"], (r_hi - returns.mean()) / (r_hi - r_lo), rtol=1e-5, atol=1e-6)
        assert 0.0 <= run["loss"] <= 1.0
    assert len({float(run["loss"]) for run in runs}) == 3  # the batch (its keys) matters


@pytest.mark.parametrize("env_id, reward", SMALL)
def test_gradient_of_the_loss_is_the_reinforce_gradient_with_a_leave_one_out_baseline(env_id, reward):
    _, _, _, runs = _probe(env_id, reward)
    for run in runs:
        g_loss, g_sur, g_ref = (_leaves(run[k]) for k in ("grad_loss", "grad_surrogate", "grad_reinforce"))
        for a, b, c in zip(g_loss, g_sur, g_ref):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
            np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-6)
        assert sum(float(np.abs(g).sum()) for g in g_loss) > 1e-3  # not the zero gradient


def test_sample_and_loss_are_deterministic_per_key():
    task, params, run, runs = _probe("CartPole-v1", "balance")
    a, b = task.sample(jax.random.key(0)), task.sample(jax.random.key(0))
    np.testing.assert_array_equal(jax.random.key_data(a), jax.random.key_data(b))
    assert not np.array_equal(jax.random.key_data(a), jax.random.key_data(task.sample(jax.random.key(1))))
    again = jax.device_get(run(params, b))
    assert float(again["loss"]) == float(runs[0]["loss"])
    for x, y in zip(_leaves(again), _leaves(runs[0])):
        np.testing.assert_array_equal(x, y)
    p2 = jax.jit(task.init)(jax.random.key(1))
    assert any(not np.array_equal(x, y) for x, y in zip(_leaves(params), _leaves(p2)))


@pytest.mark.parametrize("env_id, reward", SMALL)
def test_evaluate_is_deterministic_split_dependent_and_consistent(env_id, reward):
    task, params, _, _ = _probe(env_id, reward)
    r_lo, r_hi = task.info["return_bounds"]
    out = {s: {k: float(v) for k, v in task.evaluate(params, s).items()} for s in tasks.SPLITS}
    assert out == {s: {k: float(v) for k, v in task.evaluate(params, s).items()} for s in tasks.SPLITS}
    assert set(out["test"]) == set(task.info["metrics"])
    assert out["train"]["return"] != out["test"]["return"] and out["validation"]["return"] != out["test"]["return"]
    for m in out.values():
        np.testing.assert_allclose(m["loss"], (r_hi - m["return"]) / (r_hi - r_lo), rtol=1e-5, atol=1e-6)
        assert 0.0 <= m["loss"] <= 1.0 and 1.0 <= m["steps_to_termination"] <= L
    with pytest.raises(ValueError, match="validation"):
        task.evaluate(params, "valid")


def test_a_few_adam_steps_on_the_reinforce_gradient_lower_the_loss():
    task, params, _, _ = _probe("CartPole-v1", "balance")  # episodes end early at init: room to improve
    tx = optax.adam(3e-2)

    @jax.jit
    def train(params, key):
        def step(carry, k):
            p, s = carry
            u, s = tx.update(jax.grad(task.loss)(p, task.sample(k)), s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (params, tx.init(params)), jax.random.split(key, 40))[0][0]

    before, after = task.evaluate(params, "test"), task.evaluate(train(params, jax.random.key(1)), "test")
    assert float(after["loss"]) < float(before["loss"]) - 0.1, (before, after)
    assert float(after["steps_to_termination"]) > float(before["steps_to_termination"])


def test_the_rl_family_is_registered_held_out_and_its_tasks_keep_the_contract():
    assert "rl" in tasks.family_names()
    fam = tasks.family("rl")
    assert fam.task_names == ("cartpole/policy_mlp_tanh_2x32", "acrobot/policy_mlp_tanh_2x32")
    held_out = set(fam.task_names)
    for other in ("meta_train", "meta_test", "smoke"):  # never meta-trained on
        assert not held_out & set(tasks.family(other).task_names), other
    for task, env_id, reward in zip(fam.tasks, ("CartPole-v1", "Acrobot-v1"), ("balance", "height")):
        assert task.kind == "reinforcement" and tasks.task_group(task) == env_id
        assert task.info["reward"] == reward and task.info["novelty"] == (("kind", "reinforcement"),)
        assert task.info["architecture"] == "policy_mlp_tanh_2x32"
        assert (task.info["length"], task.info["num_episodes"]) == (200, 16)
        params = jax.eval_shape(task.init, jax.random.key(0))
        assert task.num_params == sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
        assert jax.eval_shape(task.sample, jax.random.key(0)).shape == (16,)
        assert jax.eval_shape(task.loss, params, task.sample(jax.random.key(0))).shape == ()
        graph = task.graph()
        assert int(graph.n_node[0]) == 3  # Dense, Dense, Dense
        check_graph_matches_params(graph, params)
    assert tasks.get_task("cartpole/policy_mlp_tanh_2x32") is fam.tasks[0]


@pytest.mark.parametrize("kwargs, match", [
    ({"env_id": "CartPole-v1", "reward": "height"}, "unknown \\(env_id, reward\\)"),
    ({"env_id": "Pendulum-v1"}, "unknown \\(env_id, reward\\)"),
    ({"env_id": "CartPole-v1", "length": 501}, "length must be an integer in \\[1, 500\\]"),
    ({"env_id": "CartPole-v1", "length": 0}, "length must be"),
    ({"env_id": "CartPole-v1", "num_episodes": 1}, "num_episodes must be an integer >= 2"),
    ({"env_id": "CartPole-v1", "eval_episodes": 0}, "eval_episodes must be"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rl.policy_gradient_task("bad", **kwargs)
