"""mj.adapt: test-time self-adaptation of a meta-learner on one task (tiny quadratic, short truncations)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mapa_jax as mj
from mapa_jax import tasks
from mapa_jax.meta.config import PRESETS
from mapa_jax.meta.estimators import make_estimator
from mapa_jax.meta.unroll import UnrollSpec

CONFIG = PRESETS["smoke"].meta_learner
H = 5


@pytest.fixture(scope="module")
def setup():
    task = tasks.get_task(tasks.TINY_TASK)
    meta = mj.init_meta_params(jax.random.key(3), CONFIG)
    return task, meta


def _fresh_truncation_loss(meta, task, key):
    est = make_estimator("tbptt", CONFIG, UnrollSpec(horizon=H, objective="validation"))
    return float(est.estimate(meta, est.init(meta, task, key), task, key).meta_loss)


def test_adapt_lowers_the_meta_loss_on_a_new_trajectory_is_deterministic_and_leaves_its_input(setup):
    task, meta = setup
    before = jax.tree.map(np.array, meta)
    kw = dict(steps=6, horizon=H, meta_lr=1e-2, trajectory_steps=H, key=jax.random.key(1))
    adapted = mj.adapt(meta, CONFIG, task, **kw)
    assert adapted.skipped == 0 and adapted.meta_losses.shape == (6,) and np.all(np.isfinite(adapted.meta_losses))
    jax.tree.map(np.testing.assert_array_equal, meta, before)  # the caller's meta-params are unchanged
    again = mj.adapt(meta, CONFIG, task, **kw)
    jax.tree.map(np.testing.assert_array_equal, again.meta_params, adapted.meta_params)  # deterministic per key
    # a trajectory adaptation never saw (another key): its first truncation ends lower
    new = jax.random.key(99)
    assert _fresh_truncation_loss(adapted.meta_params, task, new) < _fresh_truncation_loss(meta, task, new)
    other = mj.adapt(meta, CONFIG, task, **{**kw, "key": jax.random.key(2)})
    assert not np.array_equal(other.meta_losses, adapted.meta_losses)


def test_adapt_skips_non_finite_meta_steps_and_says_so(setup):
    task, meta = setup
    broken = dataclasses.replace(task, loss=lambda p, b: task.loss(p, b) * jnp.nan)
    with pytest.warns(RuntimeWarning, match=r"adapt: 3 of 3 meta-steps .* non-finite .* skipped"):
        out = mj.adapt(meta, CONFIG, broken, steps=3, horizon=H)
    assert out.skipped == 3 and np.all(np.isnan(out.meta_losses))
    jax.tree.map(np.testing.assert_array_equal, out.meta_params, meta)
    assert mj.adapt(meta, CONFIG, task, steps=0).meta_params is meta  # K = 0: nothing to do


@pytest.mark.parametrize("kw, match", [
    (dict(steps=-1), r"adapt: steps must be an integer >= 0, got -1"),
    (dict(horizon=0), r"adapt: horizon must be an integer >= 1, got 0"),
    (dict(meta_lr=0.0), r"adapt: meta_lr must be a finite number > 0"),
    (dict(clip_norm=float("inf")), r"adapt: clip_norm must be a finite number > 0"),
    (dict(trajectory_steps=2), r"adapt: trajectory_steps must be an integer >= 20"),
    (dict(objective="sharp"), r"adapt: objective must be one of"),
    (dict(estimator="nope"), r"unknown meta-gradient estimator 'nope'"),
])
def test_adapt_names_a_bad_argument(setup, kw, match):
    task, meta = setup
    with pytest.raises(ValueError, match=match):
        mj.adapt(meta, CONFIG, task, **kw)


def test_adapt_refuses_what_is_not_a_task_or_a_config(setup):
    task, meta = setup
    with pytest.raises(TypeError, match="adapt: task must be a mapa_jax.tasks.Task"):
        mj.adapt(meta, CONFIG, "digits")
    with pytest.raises(TypeError, match="adapt: config must be a MetaLearnerConfig"):
        mj.adapt(meta, {}, task)
