"""Tests for mapa_jax.tasks.augment and task augmentation in meta-training."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import flat as _flat
from hypothesis import given, settings
from hypothesis import strategies as st

import mapa_jax as mj
from mapa_jax import tasks
from mapa_jax.meta import checkpoint as ckpt
from mapa_jax.meta import unroll
from mapa_jax.meta.config import MetaTrainConfig, preset
from mapa_jax.meta.state import MetaTrainer
from mapa_jax.tasks.augment import rescale_task, sample_scales

TINY = tasks.get_task(tasks.TINY_TASK)  # {"x": (4, 5)}
MLP = tasks.get_task("breast_cancer/mlp_tanh_1x16")  # four tensors
log_c = st.floats(-3.0, 3.0, allow_nan=False, width=32)


def _scales_for(task, values):
    leaves, treedef = jax.tree.flatten(task.init(jax.random.key(0)))
    return jax.tree.unflatten(treedef, [jnp.float32(math.exp(v)) for v in values[: len(leaves)]])


def _times(scales, params):
    return jax.tree.map(lambda c, p: c * p, scales, params)


def _leaves_close(a, b, **tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


# ------------------------------------------------------------ rescale_task


@settings(max_examples=12, deadline=None)
@given(values=st.lists(log_c, min_size=4, max_size=4), seed=st.integers(0, 2**31 - 1))
def test_rescaled_loss_evaluate_and_init_are_the_original_at_the_mapped_point(values, seed):
    for task in (TINY, MLP):
        scales = _scales_for(task, values)
        rtask = rescale_task(task, scales)
        k_init, k_theta, k_batch = jax.random.split(jax.random.key(seed), 3)
        theta = task.init(k_theta)  # any point theta' of the rescaled task
        batch = task.sample(k_batch)
        assert float(rtask.loss(theta, batch)) == float(task.loss(_times(scales, theta), batch))
        got, want = rtask.evaluate(theta, "validation"), task.evaluate(_times(scales, theta), "validation")
        assert set(got) == set(want) and all(float(got[k]) == float(want[k]) for k in want)
        _leaves_close(rtask.init(k_init), jax.tree.map(lambda c, p: p / c, scales, task.init(k_init)), rtol=0)


@settings(max_examples=6, deadline=None)
@given(values=st.lists(log_c, min_size=4, max_size=4), seed=st.integers(0, 2**31 - 1))
def test_rescaled_gradient_is_c_times_the_original_gradient_at_the_mapped_point(values, seed):
    for task in (TINY, MLP):
        scales = _scales_for(task, values)
        k_theta, k_batch = jax.random.split(jax.random.key(seed))
        theta, batch = task.init(k_theta), task.sample(k_batch)
        g_rescaled = jax.grad(rescale_task(task, scales).loss)(theta, batch)
        g = jax.grad(task.loss)(_times(scales, theta), batch)
        _leaves_close(g_rescaled, _times(scales, g), rtol=1e-5, atol=1e-7)


def test_rescaled_task_keeps_everything_but_init_loss_and_evaluate():
    scales = sample_scales(jax.random.key(0), MLP.init(jax.random.key(1)), 1.0)
    rtask = rescale_task(MLP, scales)
    assert (rtask.name, rtask.kind, rtask.num_params, rtask.sample, rtask.graph) == (
        MLP.name, MLP.kind, MLP.num_params, MLP.sample, MLP.graph)
    assert rtask.info == {**MLP.info, "rescaled": True} and "rescaled" not in MLP.info
    # jittable, with traced scales
    loss = jax.jit(lambda s, p, b: rescale_task(MLP, s).loss(p, b))(scales, rtask.init(jax.random.key(2)),
                                                                     MLP.sample(jax.random.key(3)))
    assert np.isfinite(float(loss))


def test_sample_scales_draws_one_float32_scalar_per_tensor_within_the_range():
    params = MLP.init(jax.random.key(0))
    scales = sample_scales(jax.random.key(1), params, 0.5)
    assert jax.tree.structure(scales) == jax.tree.structure(params)
    for c in jax.tree.leaves(scales):
        assert c.shape == () and c.dtype == jnp.float32 and math.exp(-0.5) <= float(c) <= math.exp(0.5)
    assert len({float(c) for c in jax.tree.leaves(scales)}) == 4  # independent draws
    _leaves_close(sample_scales(jax.random.key(1), params, 0.5), scales, rtol=0)  # a function of the key
    assert all(float(c) == 1.0 for c in jax.tree.leaves(sample_scales(jax.random.key(1), params, 0)))
    shapes = jax.eval_shape(MLP.init, jax.random.key(0))  # only the structure is used
    _leaves_close(sample_scales(jax.random.key(1), shapes, 0.5), scales, rtol=0)


# ------------------------------------------------------------ in meta-training


def test_augmented_trajectory_starts_at_the_same_point_and_loss_in_other_coordinates():
    meta = mj.init_meta_params(jax.random.key(0), preset("smoke").meta_learner)
    cfg = preset("smoke").meta_learner
    key = jax.random.key(5)
    plain = unroll.init_inner_state(meta, cfg, MLP, key)
    aug = unroll.init_augmented(lambda t, k: unroll.init_inner_state(meta, cfg, t, k), MLP, key, 1.0)
    assert isinstance(aug, unroll.AugmentedState) and isinstance(aug.inner, unroll.InnerState)
    assert jax.tree.structure(aug.scales) == jax.tree.structure(plain.params)
    _leaves_close(_times(aug.scales, aug.inner.params), plain.params, rtol=1e-6)
    np.testing.assert_allclose(float(aug.inner.loss0), float(plain.loss0), rtol=1e-6)
    np.testing.assert_array_equal(aug.inner.key, plain.key)  # the trajectory's own stream is untouched
    spec = unroll.UnrollSpec(horizon=2, objective="validation")
    loss, (new, _) = unroll.truncated_unroll(meta, cfg, MLP, aug, spec)
    assert isinstance(new, unroll.AugmentedState) and np.isfinite(float(loss)) and int(new.step) == 2
    _leaves_close(new.scales, aug.scales, rtol=0)  # carried to the next truncation


def test_off_by_default_and_then_the_inner_state_is_as_before():
    assert MetaTrainConfig().augment_log_range == 0.0 and preset("smoke").augment_log_range == 0.0
    key = jax.random.key_data(jax.random.key(1))
    off, on = (MetaTrainer(preset("smoke", tasks=tasks.TINY_TASK, augment_log_range=r), devices=1)
               for r in (0.0, 1.0))
    meta = off.init_state(0).meta_params
    a, b = (t.init_batch(tasks.TINY_TASK, meta, key) for t in (off, on))
    # Off: a plain InnerState (same tree, hence same checkpoint layout, as before the option existed).
    assert type(a) is unroll.InnerState and a._fields == ("params", "opt_state", "step", "key", "loss0")
    assert isinstance(b, unroll.AugmentedState) and jax.tree.structure(b.inner) == jax.tree.structure(a)
    assert b.scales["x"].shape == (2,) and float(b.scales["x"][0]) != float(b.scales["x"][1])  # per trajectory
    np.testing.assert_array_equal(a.key, b.inner.key)


# Short runs on the tiny task: a replay buffer of one meta-batch (so that
# trajectories are continued from it), a checkpoint every meta-update, no
# rematerialization (a quicker compile; the policy is orthogonal to augmentation).
AUG = preset("smoke", tasks=tasks.TINY_TASK, meta_steps=4, replay_size=2, checkpoint_every=1,
             checkpoint_policy=None, augment_log_range=1.0)


def _run(trainer, st):
    """``st`` advanced to the end of the run, as :func:`mapa_jax.meta_train` loops it."""
    while st.step < trainer.cfg.meta_steps:
        st, _ = trainer.meta_update(st)
    return st


def test_augmented_meta_training_is_deterministic_resumes_bit_exactly_and_differs_from_plain(tmp_path):
    d = str(tmp_path / "run")
    a = mj.meta_train(AUG, checkpoint_dir=d, seed=0, progress=False, devices=1)  # checkpoints at steps 2 and 4
    assert max(r["inner_step"] for r in a.metrics) > AUG.horizon  # some trajectory was continued
    # A second run with the seed ends at the same meta-params.
    trainer = MetaTrainer(AUG, devices=1)
    np.testing.assert_array_equal(_flat(_run(trainer, trainer.init_state(0)).meta_params), _flat(a.meta_params))
    # The checkpoint holds each trajectory's scales; resumed, it ends where the run did.
    st, meta = ckpt.restore_state(
        d, lambda m: trainer.abstract_state(tuple(m["buffer_tasks"]), tuple(m["baselines"])), step=2)
    assert meta["train_config"]["augment_log_range"] == 1.0
    assert st.buffer and all(inner.scales["x"].shape == (AUG.meta_batch,) for inner in st.buffer)
    np.testing.assert_array_equal(_flat(_run(trainer, st).meta_params), _flat(a.meta_params))
    # Without augmentation: the same tasks are drawn, but the learner sees other numbers.
    plain = mj.meta_train(dataclasses.replace(AUG, augment_log_range=0.0), seed=0, progress=False, devices=1)
    assert [r["task"] for r in a.metrics] == [r["task"] for r in plain.metrics]
    assert not np.array_equal(_flat(a.meta_params), _flat(plain.meta_params))


def test_config_round_trips_the_field_and_reads_configs_without_it():
    cfg = preset("smoke", augment_log_range=0.5)
    assert MetaTrainConfig.from_dict(cfg.to_dict()) == cfg
    old = preset("smoke").to_dict()
    del old["augment_log_range"]  # a config saved before the field existed
    assert MetaTrainConfig.from_dict(old) == preset("smoke")


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "1.0", True, None])
def test_bad_log_range_is_a_clear_error(bad):
    params = TINY.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"sample_scales: log_range must be a finite real number >= 0"):
        sample_scales(jax.random.key(0), params, bad)
    with pytest.raises(ValueError, match=r"MetaTrainConfig\.augment_log_range must be a finite number >= 0"):
        preset("smoke", augment_log_range=bad)


def test_scales_that_do_not_match_the_params_are_a_clear_error():
    with pytest.raises(ValueError, match=r"scales must have the tree structure of the task's params"):
        rescale_task(MLP, {"x": jnp.float32(2.0)})
    with pytest.raises(ValueError, match=r"scales must have the tree structure"):
        rescale_task(TINY, [jnp.float32(2.0)])
    with pytest.raises(ValueError, match=r"scales\['x'\] must be a scalar"):
        rescale_task(TINY, {"x": jnp.ones((4, 5))})
