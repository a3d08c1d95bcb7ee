"""Tests for the meta-training loop: determinism, resume, learning, bad input."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

import mapa_jax as mj
from conftest import flat as _flat
from mapa_jax.meta import checkpoint as ckpt
from mapa_jax import evaluation
from mapa_jax.meta import train

# A small, fast configuration on the smoke tasks (the smoke preset, shorter).
QUICK = dict(meta_steps=8)


def test_smoke_run_writes_checkpoint_metrics_and_plot(smoke_run):
    result, d, _ = smoke_run
    lines = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
    assert len(lines) == result.config.meta_steps
    for key in ("meta_loss", "skipped_updates", "task", "group", "inner_loss"):
        assert key in lines[0]
    assert os.path.getsize(os.path.join(d, "metrics.png")) > 1000
    meta, config = mj.load_meta_params(d)
    assert config == result.config.meta_learner
    np.testing.assert_array_equal(_flat(meta), _flat(result.meta_params))


def test_learning_happens_smoke_beats_its_random_initialization(smoke_run):
    result, _, _ = smoke_run
    cfg = result.config.meta_learner
    random_meta = train.initial_meta_params(result.config, 0)  # the run's own initialization
    tasks = train.resolve_tasks(result.config.tasks)
    seeds = [0, 1, 2]
    steps = result.config.inner_steps
    factory = evaluation.MapaFactory(cfg)

    def train_loss(meta):  # mean final training loss over the seeds, per task
        return {t.name: np.mean([r["metrics"]["train"]["loss"] for r in evaluation.run_seeds(factory, t, seeds, steps, meta)])
                for t in tasks}

    trained, initial = train_loss(result.meta_params), train_loss(random_meta)
    wins = sum(trained[n] < initial[n] for n in trained)
    assert wins == len(trained), (trained, initial)


def test_two_runs_with_one_seed_give_bit_identical_meta_params():
    a = mj.meta_train(train.preset("smoke", **QUICK), seed=3, progress=False)
    b = mj.meta_train(train.preset("smoke", **QUICK), seed=3, progress=False)
    np.testing.assert_array_equal(_flat(a.meta_params), _flat(b.meta_params))
    assert not np.array_equal(_flat(a.meta_params), _flat(train.initial_meta_params(a.config, 3)))


def test_cosine_meta_lr_runs_from_meta_lr_down_to_zero_at_the_last_update():
    cfg = train.preset("smoke", meta_steps=9, meta_batch=2, tasks_per_update=4, meta_lr_schedule="cosine")
    assert cfg.num_updates == 5  # 9 steps, 2 per update: the last update has one
    opt = cfg.meta_optimizer()
    params = {"w": np.zeros(3, np.float32)}
    state = opt.init(params)
    steps = []
    for _ in range(cfg.num_updates):  # grads of norm < clip_norm: Adam's first steps are lr * sign(g)
        g = {"w": np.full(3, 1e-3 * (len(steps) + 1), np.float32)}
        u, state = opt.update(g, state, params)
        steps.append(-float(u["w"][0]))
    lrs = [cfg.meta_lr * 0.5 * (1 + np.cos(np.pi * k / cfg.num_updates)) for k in range(cfg.num_updates)]
    assert steps[0] == pytest.approx(cfg.meta_lr, rel=1e-3)
    # Adam's normalized step is about 1 for a steadily growing gradient; the ratio to
    # the scheduled lr is the same at every update.
    ratios = np.array(steps) / np.array(lrs)
    np.testing.assert_allclose(ratios, ratios[0], rtol=0.2)
    assert steps[-1] < 0.15 * steps[0]
    constant = train.preset("smoke").meta_optimizer()
    u, _ = constant.update({"w": np.full(3, 1e-3, np.float32)}, constant.init(params), params)
    assert -float(u["w"][0]) == pytest.approx(train.preset("smoke").meta_lr, rel=1e-3)


def test_head_weight_decay_pulls_only_the_near_zero_initialized_parameters_toward_zero():
    cfg = train.preset("smoke", head_weight_decay=2.0)
    params = train.initial_meta_params(cfg, 0)
    opt = cfg.meta_optimizer()
    zero = jax.tree_util.tree_map(np.zeros_like, params)  # no gradient: only the decay moves
    u, _ = opt.update(zero, opt.init(params), params)
    flat_p = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(params)}
    flat_u = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(u)}
    decayed = {k for k in flat_p if k.endswith(("['heads']['kernel']", "['film']['kernel']", "['film']['bias']"))}
    assert len(decayed) == 3
    for k, p in flat_p.items():
        expected = -cfg.meta_lr * 2.0 * np.asarray(p) if k in decayed else np.zeros_like(p)
        np.testing.assert_allclose(flat_u[k], expected, rtol=1e-6, atol=1e-12, err_msg=k)
    # The heads' bias (the configured init_*) and the LSTM are untouched; without
    # the option the optimizer is plain Adam (no decay at all).
    plain = train.preset("smoke").meta_optimizer()
    u, _ = plain.update(zero, plain.init(params), params)
    assert all(not np.any(np.asarray(x)) for x in jax.tree_util.tree_leaves(u))


def test_a_format1_checkpoint_resumes_to_the_same_meta_params(tmp_path, smoke_run):
    """Step 20 of the same run, written before the MetaTrainState layout, resumes bit-exactly."""
    reference, _, _ = smoke_run
    d = str(tmp_path / "old")
    shutil.copytree(os.path.join(os.path.dirname(__file__), "data", "checkpoint_format1"), d)
    resumed = mj.meta_train("smoke", checkpoint_dir=d, seed=0, resume=True, progress=False, devices=1)
    assert [r["step"] for r in resumed.metrics] == list(range(21, 25))
    np.testing.assert_array_equal(_flat(resumed.meta_params), _flat(reference.meta_params))
    assert ckpt.read_meta(d)["format"] == ckpt.FORMAT  # new steps are written in the new layout


def test_meta_update_returns_a_new_state_and_leaves_its_input_unchanged():
    from mapa_jax import tasks
    from mapa_jax.meta.state import MetaTrainer

    trainer = MetaTrainer(train.preset("smoke", tasks=tasks.TINY_TASK, tasks_per_update=4), devices=1)
    st0 = trainer.init_state(0)
    before = [np.array(x) for x in jax.tree.leaves(st0)]
    st1, record = trainer.meta_update(st0)
    st2, record2 = trainer.meta_update(st1)
    assert (st0.step, st1.step, st2.step) == (0, 1, 2) and st0.buffer == () and st0.baselines == {}
    for a, b in zip(before, jax.tree.leaves(st0)):
        np.testing.assert_array_equal(a, np.asarray(b))
    assert record["group"] == "quadratic" and len(st1.buffer) == len(st1.buffer_tasks) == 1
    assert "updated" not in record and st1.acc_count == 1 and st1.updates == 0  # 2 steps per update
    assert record2["updated"] and st2.updates == 1 and st2.acc_count == 0
    assert not np.array_equal(_flat(st2.meta_params), _flat(st0.meta_params))


# ------------------------------------------------------------------ bad input


def test_unknown_preset_and_task_names_raise():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        train.preset("huge")
    with pytest.raises((KeyError, ValueError), match="no_such_task"):
        mj.meta_train(train.preset("smoke", tasks="no_such_task"), progress=False)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(horizon=0), "horizon must be an integer >= 1"),
        (dict(horizon=7), "horizon must be a divisor"),
        (dict(inner_steps=10, min_inner_steps=20), "min_inner_steps must be <= inner_steps"),
        (dict(meta_batch=0), "meta_batch must be an integer >= 1"),
        (dict(objective="best"), "objective must be one of"),
        (dict(normalize_by_group=1), "normalize_by_group must be True or False"),
        (dict(estimator="pess"), "estimator must be one of"),
        (dict(meta_lr_schedule="linear"), "meta_lr_schedule must be one of"),
        (dict(head_weight_decay=-1.0), "head_weight_decay must be a finite number >= 0"),
        (dict(head_weight_decay=float("nan")), "head_weight_decay must be a finite number >= 0"),
    ],
)
def test_invalid_configuration_raises(overrides, match):
    with pytest.raises(ValueError, match=match):
        train.preset("smoke", **overrides)


def test_resume_and_overwrite_errors_are_clear(tmp_path, smoke_run):
    _, good, _ = smoke_run
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        mj.meta_train("smoke", resume=True, progress=False)
    # A run with another configuration cannot resume this directory.
    with pytest.raises(ckpt.CheckpointError, match="another configuration or seed"):
        mj.meta_train(train.preset("smoke", meta_lr=1e-2), checkpoint_dir=good, resume=True, progress=False)
    # A fresh run refuses to overwrite a directory that holds a checkpoint.
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        mj.meta_train("smoke", checkpoint_dir=good, progress=False)


def test_failed_run_never_overwrites_a_good_checkpoint(tmp_path, monkeypatch):
    d = str(tmp_path / "run")
    cfg = train.preset("smoke", **QUICK)

    def crash_at_6(record):
        if record["step"] == 6:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        mj.meta_train(cfg, checkpoint_dir=d, seed=0, progress=False, on_step=crash_at_6)
    good_step = ckpt.latest_step(d)
    assert good_step == 4  # the checkpoint before the crash
    before = _flat(mj.load_meta_params(d)[0])
    # A save that fails half-way (an unserializable leaf in the state) leaves
    # the previous step as the newest complete one.
    real = ckpt._state_tree
    monkeypatch.setattr(ckpt, "_state_tree", lambda st: real(st)._replace(buffer=(object(),)))
    with pytest.raises(Exception):
        mj.meta_train(cfg, checkpoint_dir=d, seed=0, resume=True, progress=False)
    assert ckpt.latest_step(d) == good_step
    np.testing.assert_array_equal(_flat(mj.load_meta_params(d)[0]), before)
