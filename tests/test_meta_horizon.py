"""Tests for horizon-aware meta-training: each trajectory's own length T, told to the learner."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import flat as _flat

import mapa_jax as mj
from mapa_jax import tasks
from mapa_jax.evaluation.protocol import MapaFactory
from mapa_jax.evaluation.runner import run_seeds
from mapa_jax.meta import checkpoint as ckpt
from mapa_jax.meta import unroll
from mapa_jax.meta.config import MetaTrainConfig, preset
from mapa_jax.meta.state import MetaTrainer

SMOKE = preset("smoke", tasks=tasks.TINY_TASK)
AWARE = dataclasses.replace(SMOKE, meta_learner=dataclasses.replace(SMOKE.meta_learner, horizon_aware=True))


def test_sample_length_draws_multiples_of_the_horizon_and_a_fraction_not_told():
    keys = [jax.random.key(i) for i in range(200)]
    plain = MetaTrainer(SMOKE, devices=1)
    assert {plain.sample_length(k, 40) for k in keys[:5]} == {(40, 0)}  # no horizon features: nothing drawn
    trainer = MetaTrainer(AWARE, devices=1)  # horizon 10, min_inner_steps 20
    draws = [trainer.sample_length(k, 40) for k in keys]
    assert draws == [trainer.sample_length(k, 40) for k in keys]  # a function of the key
    told = [t for t, told in draws if told]
    assert all(told_t == t for t, told_t in draws if told_t)
    assert set(told) == {20, 30, 40}
    unknown = sum(1 for d in draws if d == (40, 0))
    # Binomial(200, 0.25): mean 50, sd 6.1; outside [20, 80] has probability < 1e-6.
    assert 20 <= unknown <= 80
    assert {trainer.sample_length(k, 20)[0] for k in keys[:50]} == {20}  # the curriculum's T caps it
    for fraction, expect in ((0.0, 0), (1.0, 200)):
        t = MetaTrainer(dataclasses.replace(AWARE, unknown_horizon_fraction=fraction), devices=1)
        assert sum(1 for k in keys if t.sample_length(k, 40) == (40, 0)) >= expect
        if fraction == 0.0:
            assert all(t.sample_length(k, 40)[1] > 0 for k in keys)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5", True])
def test_unknown_horizon_fraction_is_validated(bad):
    with pytest.raises(ValueError, match=r"MetaTrainConfig\.unknown_horizon_fraction must be a number in \[0, 1\]"):
        preset("smoke", unknown_horizon_fraction=bad)


def test_the_horizon_state_carries_t_and_plain_learners_keep_their_state():
    key = jax.random.key_data(jax.random.key(1))
    plain, aware = MetaTrainer(SMOKE, devices=1), MetaTrainer(AWARE, devices=1)
    a = plain.init_batch(tasks.TINY_TASK, plain.init_state(0).meta_params, key)
    assert type(a) is unroll.InnerState  # no horizon features: the layout (and checkpoints) as before
    meta = aware.init_state(0).meta_params
    b = aware.init_batch(tasks.TINY_TASK, meta, key, 30)
    assert isinstance(b, unroll.HorizonState) and np.asarray(b.total_steps).tolist() == [30, 30]
    np.testing.assert_array_equal(a.key, b.inner.key)
    # One truncation: told T, the learner's steps differ from those of the same trajectory not told it.
    spec = unroll.UnrollSpec(horizon=3, objective="validation", checkpoint=None)
    task = tasks.get_task(tasks.TINY_TASK)
    one = jax.tree.map(lambda x: x[0], b)
    loss_t, (new, _) = unroll.truncated_unroll(meta, AWARE.meta_learner, task, one, spec)
    loss_0, _ = unroll.truncated_unroll(meta, AWARE.meta_learner, task, one._replace(total_steps=jnp.int32(0)), spec)
    assert isinstance(new, unroll.HorizonState) and int(new.total_steps) == 30 and int(new.step) == 3
    assert np.isfinite(float(loss_t)) and float(loss_t) != float(loss_0)


# Short runs (with augmentation, so that HorizonState wraps an AugmentedState):
# a buffer of one meta-batch, a checkpoint every meta-update, no rematerialization.
RUN = dataclasses.replace(AWARE, meta_steps=5, replay_size=2, checkpoint_every=1, checkpoint_policy=None,
                          augment_log_range=1.0, unknown_horizon_fraction=0.0)


def test_horizon_aware_meta_training_is_deterministic_and_resumes_bit_exactly(tmp_path):
    d = str(tmp_path / "run")
    a = mj.meta_train(RUN, checkpoint_dir=d, seed=0, progress=False, devices=1)
    for r in a.metrics:  # each trajectory's own T, within the curriculum's, and it retires there
        assert r["trajectory_T"] % RUN.horizon == 0 and RUN.min_inner_steps <= r["trajectory_T"] <= r["T"]
        assert r["inner_step"] <= r["trajectory_T"]
    trainer = MetaTrainer(RUN, devices=1)
    st, meta = ckpt.restore_state(
        d, lambda m: trainer.abstract_state(tuple(m["buffer_tasks"]), tuple(m["baselines"])), step=RUN.meta_steps - 1)
    assert st.buffer and all(isinstance(b, unroll.HorizonState) and isinstance(b.inner, unroll.AugmentedState)
                             for b in st.buffer)
    while st.step < RUN.meta_steps:
        st, _ = trainer.meta_update(st)
    np.testing.assert_array_equal(_flat(st.meta_params), _flat(a.meta_params))
    assert MetaTrainConfig.from_dict(meta["train_config"]) == RUN


def test_the_evaluation_tells_a_horizon_aware_learner_the_run_length():
    cfg = AWARE.meta_learner
    meta = mj.init_meta_params(jax.random.key(0), cfg)
    task = tasks.get_task(tasks.TINY_TASK)
    told, not_told = (run_seeds(MapaFactory(cfg, t), task, [0], 4, hparams=meta) for t in (4, None))
    assert not np.array_equal(told[0]["losses"], not_told[0]["losses"])
