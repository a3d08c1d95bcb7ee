"""Tests for the baselines registry (mapa_jax/evaluation/baselines.py): entries, not
code paths; a zero-config optimizer is an entry with an empty grid."""

import numpy as np
import optax
import pytest

from conftest import EVAL_SEEDS, EVAL_T
from mapa_jax import evaluation


def test_the_default_baselines_are_registered_with_the_paper_grids():
    assert evaluation.baseline_names()[:3] == ["prox_adam", "pgd", "prox_rmsprop"]
    assert evaluation.get_baseline("pgd").grid == {"learning_rate": (1e-1, 1e-2, 1e-3), "l1": (1e-3, 1e-4, 1e-5)}
    assert evaluation.DEFAULT_BASELINES == ("mapa_random_init", "prox_adam", "pgd", "prox_rmsprop")
    with pytest.raises(ValueError, match=r"unknown baseline 'adamw'; known baselines: \['prox_adam'"):
        evaluation.get_baseline("adamw")


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
