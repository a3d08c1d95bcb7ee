"""Tests for the baselines registry (mapa_jax/evaluation/baselines.py): entries, not
code paths; a zero-config optimizer is an entry with an empty grid."""

import jax
import numpy as np
import optax
import pytest

from conftest import EVAL_SEEDS, EVAL_T
from mapa_jax import evaluation


def test_the_default_baselines_are_registered_with_the_paper_grids():
    assert evaluation.baseline_names()[:3] == ["prox_adam", "pgd", "prox_rmsprop"]
    assert evaluation.get_baseline("pgd").grid == {"learning_rate": (1e-1, 1e-2, 1e-3), "l1": (1e-3, 1e-4, 1e-5)}
    assert evaluation.DEFAULT_BASELINES == ("mapa_random_init", "prox_adam", "pgd", "prox_rmsprop", "adam", "prodigy",
                                            "schedule_free_adamw", "dadapt_adamw", "adamw")
    assert evaluation.get_baseline("adamw").grid == {"learning_rate": (3e-4, 1e-3, 3e-3, 1e-2)}
    assert all(evaluation.get_baseline(n).grid == {} for n in evaluation.ZERO_CONFIG_BASELINES)
    with pytest.raises(ValueError, match=r"unknown baseline 'sgd'; known baselines: \['prox_adam'"):
        evaluation.get_baseline("sgd")


def test_every_default_baseline_runs_on_the_tiny_task_and_is_finite(eval_result):
    result, task, _, _ = eval_result
    methods = result["tasks"][task.name]["methods"]
    initial = {}  # the test loss at each seed's initialization
    for seed in EVAL_SEEDS:
        k_init, _ = jax.random.split(jax.random.key(evaluation.EVAL_SEED_OFFSET + seed))
        initial[seed] = float(task.evaluate(task.init(k_init), "test")["loss"])
    for name in evaluation.DEFAULT_BASELINES:
        assert methods[name]["finite_fraction"] == 1.0, name
        for r in methods[name]["per_seed"]:  # 20 steps lower the quadratic's loss, whatever the method
            assert r["test_loss"] < initial[r["seed"]], (name, r, initial)
    assert methods["adamw"]["hparams"]["learning_rate"] in (3e-4, 1e-3, 3e-3, 1e-2)
    assert [g["hparams"] for g in methods["adamw"]["grid"]] == [{"learning_rate": lr} for lr in (3e-4, 1e-3, 3e-3, 1e-2)]


def test_schedule_free_is_measured_at_its_averaged_point(eval_result):
    """Its reported numbers are those of schedule_free_eval_params(state, params), not of the training iterate."""
    result, task, _, _ = eval_result
    entry = evaluation.get_baseline("schedule_free_adamw")
    at_average = evaluation.run_seeds(entry.make, task, list(EVAL_SEEDS), EVAL_T, {},
                                      eval_params=optax.contrib.schedule_free_eval_params)
    at_iterate = evaluation.run_seeds(entry.make, task, list(EVAL_SEEDS), EVAL_T, {})
    reported = [r["test_loss"] for r in result["tasks"][task.name]["methods"]["schedule_free_adamw"]["per_seed"]]
    np.testing.assert_allclose(reported, [r["metrics"]["test"]["loss"] for r in at_average], rtol=1e-6)
    assert all(a["metrics"]["test"]["loss"] != b["metrics"]["test"]["loss"] for a, b in zip(at_average, at_iterate))
    np.testing.assert_array_equal(at_average[0]["losses"], at_iterate[0]["losses"])  # one training run


def test_register_refuses_duplicates_and_mapa_names():
    entry = evaluation.Baseline("prox_adam", lambda task, hp: optax.adam(1e-3), {})
    with pytest.raises(ValueError, match="already registered"):
        evaluation.register_baseline(entry)
    for name in ("mapa", "mapa_random_init"):
        with pytest.raises(ValueError, match="MAPA method"):
            evaluation.register_baseline(evaluation.Baseline(name, entry.make, {}))


def _adam(task, hparams):
    del task, hparams
    return optax.adam(1e-3)


def test_a_zero_config_entry_runs_once_and_reports_its_own_run(eval_result):
    _, task, meta, config = eval_result
    entry = evaluation.register_baseline(evaluation.Baseline("adam_test", _adam, {}, "Adam, lr 1e-3"))
    try:
        res = evaluation.compare(meta, config, [task], list(EVAL_SEEDS), EVAL_T, baselines=("adam_test",))
        rep = evaluation.markdown_report({"families": {"smoke": res}})
    finally:
        del evaluation.BASELINES[entry.name]
    assert res["config"]["methods"] == ["mapa", "adam_test"]
    adam = res["tasks"][task.name]["methods"]["adam_test"]
    assert adam["hparams"] == {} and len(adam["grid"]) == 1
    direct = evaluation.run_seeds(lambda t: optax.adam(1e-3), task, list(EVAL_SEEDS), EVAL_T)
    np.testing.assert_allclose([r["test_loss"] for r in adam["per_seed"]],
                               [r["metrics"]["test"]["loss"] for r in direct], rtol=1e-5)
    assert "| task | metric | mapa | adam_test |" in rep and "Chosen hyperparameters" not in rep
