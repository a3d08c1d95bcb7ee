"""Tests for mapa_jax.meta.checkpoint: the state round trip, both formats, faults."""

import os
import shutil

import jax
import numpy as np
import pytest

import mapa_jax as mj
from mapa_jax import tasks
from mapa_jax.meta import checkpoint as ckpt
from mapa_jax.meta.config import preset
from mapa_jax.meta.state import MetaTrainer, MetaTrainState

# A meta-training checkpoint written before the MetaTrainState layout (format 1:
# items meta_params / train_state / meta): step 20 of
# `mapa meta-train --preset smoke --seed 0 --devices 1` at commit 5e6419b.
FORMAT1 = os.path.join(os.path.dirname(__file__), "data", "checkpoint_format1")

CFG = preset("smoke", tasks=tasks.TINY_TASK)


@pytest.fixture(scope="module")
def trainer():
    return MetaTrainer(CFG, devices=1)


@pytest.fixture(scope="module")
def state(trainer):
    """A state with two trajectories in the buffer, a baseline and counters."""
    st = trainer.init_state(0)
    inner = jax.tree.map(np.asarray, trainer.init_batch(tasks.TINY_TASK, st.meta_params,
                                                          jax.random.key_data(jax.random.key(1))))
    return st._replace(buffer=(inner, inner), buffer_tasks=(tasks.TINY_TASK,) * 2,
                       baselines={"quadratic": 0.1 + 0.2, "b/c": 1 / 3}, step=7, updates=3, skipped=1,
                       acc_count=2)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _abstract(trainer):
    return lambda meta: trainer.abstract_state(tuple(meta["buffer_tasks"]), tuple(meta["baselines"]))


def test_state_round_trips_exactly_through_one_pytree_and_json(tmp_path, trainer, state):
    d = str(tmp_path / "run")
    ckpt.save_state(d, state, {"seed": 0, "meta_learner": CFG.meta_learner.to_dict()})
    items = set(os.listdir(os.path.join(d, "7")))
    assert {"meta", "state"} <= items and not items & {"meta_params", "train_state"}
    restored, meta = ckpt.restore_state(d, _abstract(trainer))
    assert isinstance(restored, MetaTrainState) and meta["format"] == ckpt.FORMAT and meta["seed"] == 0
    assert restored.buffer_tasks == state.buffer_tasks
    assert restored.baselines == state.baselines  # floats bit-exact (0.1 + 0.2 is not 0.3)
    assert (restored.step, restored.updates, restored.skipped, restored.acc_count) == (7, 3, 1, 2)
    assert jax.tree.structure(restored._replace(buffer_tasks=())) == jax.tree.structure(state._replace(buffer_tasks=()))
    for a, b in zip(_leaves(restored), _leaves(state)):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    meta_params, config = mj.load_meta_params(d)
    assert config == CFG.meta_learner
    for a, b in zip(_leaves(meta_params), _leaves(state.meta_params)):
        np.testing.assert_array_equal(a, b)


def test_format1_checkpoint_still_loads(trainer):
    meta = ckpt.read_meta(FORMAT1)
    assert "format" not in meta and ckpt.latest_step(FORMAT1) == 20
    meta_params, config = mj.load_meta_params(FORMAT1)
    assert config == preset("smoke").meta_learner
    mj.mapa(meta_params, config)  # a usable learner
    smoke = MetaTrainer(preset("smoke"), devices=1)
    st, _ = ckpt.restore_state(FORMAT1, _abstract(smoke))
    assert st.step == 20 and len(st.buffer) == len(meta["buffer_tasks"]) > 0
    assert st.baselines == meta["baselines"] and st.updates == meta["updates"]
    for a, b in zip(_leaves(st.meta_params), _leaves(meta_params)):
        np.testing.assert_array_equal(a, b)


def test_missing_empty_and_unknown_steps_are_clear_errors(tmp_path, state):
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint directory"):
        mj.load_meta_params(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ckpt.CheckpointError, match="no complete checkpoint"):
        mj.load_meta_params(str(tmp_path / "empty"))
    with pytest.raises(ckpt.CheckpointError, match="no complete checkpoint"):
        ckpt.read_meta(str(tmp_path / "empty"))
    with pytest.raises(ckpt.CheckpointError, match=r"no complete step 3; it has \[20\]"):
        ckpt.read_meta(FORMAT1, step=3)


@pytest.mark.parametrize("item", ["state", "meta"])
def test_corrupt_files_are_reported_and_never_loaded(tmp_path, trainer, state, item):
    d = tmp_path / "run"
    ckpt.save_state(str(d), state, {"seed": 0, "meta_learner": CFG.meta_learner.to_dict()})
    for root, _, files in os.walk(d / "7" / item):
        for f in files:
            with open(os.path.join(root, f), "r+b") as fh:
                fh.write(b"\x00garbage\xff" * 8)
    with pytest.raises(ckpt.CheckpointError):
        mj.load_meta_params(str(d))
    with pytest.raises(ckpt.CheckpointError):
        ckpt.restore_state(str(d), _abstract(trainer))


def test_a_save_that_fails_half_way_leaves_the_previous_step(tmp_path, trainer, state, monkeypatch):
    d = str(tmp_path / "run")
    info = {"seed": 0, "meta_learner": CFG.meta_learner.to_dict()}
    ckpt.save_state(d, state, info)
    real = ckpt._state_tree
    monkeypatch.setattr(ckpt, "_state_tree", lambda st: real(st)._replace(buffer=(object(),)))
    with pytest.raises(Exception):
        ckpt.save_state(d, state._replace(step=8), info)
    with pytest.raises(TypeError):  # not JSON: nothing is written
        ckpt.save_state(d, state._replace(step=9), {"bad": object()})
    assert ckpt.latest_step(d) == 7
    monkeypatch.undo()
    restored, _ = ckpt.restore_state(d, _abstract(trainer))
    for a, b in zip(_leaves(restored), _leaves(state)):
        np.testing.assert_array_equal(a, b)


def test_restore_checks_the_structure_it_is_given(tmp_path, trainer, state):
    d = str(tmp_path / "run")
    ckpt.save_state(d, state, {"seed": 0, "meta_learner": CFG.meta_learner.to_dict()})
    other = MetaTrainer(preset("smoke", tasks=tasks.TINY_TASK,
                               meta_learner=mj.MetaLearnerConfig(lstm_hidden=4, gnn_hidden=4)), devices=1)
    with pytest.raises(ckpt.CheckpointError, match="do not match the expected structure"):
        ckpt.restore_state(d, _abstract(other))
    shutil.rmtree(os.path.join(d, "7", "state"))
    with pytest.raises(ckpt.CheckpointError):
        mj.load_meta_params(d)
