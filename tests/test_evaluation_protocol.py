"""Tests for the comparison protocol (mapa_jax/evaluation/protocol.py): compare and
select_best. Tiny: the 20-parameter quadratic, short T, tiny grids (conftest.eval_result)."""

import json
import math

import numpy as np
import pytest

import mapa_jax as mj
from conftest import EVAL_GRID, EVAL_SEEDS, EVAL_T
from mapa_jax import evaluation

T = EVAL_T
SEEDS = list(EVAL_SEEDS)
METHODS = ["mapa", "mapa_random_init", "prox_adam", "pgd", "prox_rmsprop", "adam", "prodigy",
           "schedule_free_adamw", "dadapt_adamw", "adamw"]


def test_compare_reports_every_method_with_seed_statistics(eval_result):
    result, tiny, _, _ = eval_result
    assert result["config"]["methods"] == METHODS
    assert result["config"]["seeds"] == SEEDS and result["config"]["steps"] == T
    assert result["config"]["eval_seed_offset"] == evaluation.EVAL_SEED_OFFSET
    entry = result["tasks"][tiny.name]
    assert entry["kind"] == "synthetic" and entry["metric"] == "suboptimality"
    assert set(entry["methods"]) == set(METHODS)
    for name, s in entry["methods"].items():
        assert len(s["per_seed"]) == len(SEEDS), name
        losses = [r["test_loss"] for r in s["per_seed"]]
        assert s["test_loss"]["mean"] == pytest.approx(np.mean(losses), rel=1e-6)
        assert s["test_loss"]["std"] == pytest.approx(np.std(losses), rel=1e-6, abs=1e-9)
        assert s["test_metric"]["mean"] == pytest.approx(np.mean([r["test_metric"] for r in s["per_seed"]]), rel=1e-6)
        assert s["finite_fraction"] == 1.0
        assert 0.0 <= s["sparsity"]["mean"] <= 1.0
        assert 1 <= s["steps_to_95"]["mean"] <= T and s["steps_to_95"]["reached"] == len(SEEDS)
        assert 0 < s["wall_s"] < 600  # compile and run, measured
    assert entry["methods"]["prox_rmsprop"]["hparams"] == {"learning_rate": 1e-3, "l1": 1e-5}  # untuned default
    assert entry["methods"]["mapa"]["hparams"] is None
    # Different meta-params, different runs: mapa is not its random initialization.
    assert entry["methods"]["mapa"]["test_loss"]["mean"] != entry["methods"]["mapa_random_init"]["test_loss"]["mean"]
    assert set(result["aggregates"]) == {"mean_rank", "wins", "paired", "performance"}
    json.dumps(evaluation.jsonable(result), allow_nan=False)  # plain JSON


def test_grid_search_picks_the_lowest_validation_loss_and_reports_its_test_numbers(eval_result):
    result, tiny, _, _ = eval_result
    pgd = result["tasks"][tiny.name]["methods"]["pgd"]
    assert [g["hparams"]["learning_rate"] for g in pgd["grid"]] == [1e-4, 1e-1]
    vals = [g["validation_loss"] for g in pgd["grid"]]
    assert vals[1] < vals[0]  # the known winner: lr 0.1
    assert pgd["hparams"] == {"learning_rate": 1e-1, "l1": 1e-5}
    assert pgd["test_loss"]["mean"] == pytest.approx(pgd["grid"][1]["test_loss"])
    # The reported numbers are those of a direct run of the chosen setting.
    direct = evaluation.run_seeds(lambda task: mj.proximal_gradient(0.1, l1=1e-5), tiny, [SEEDS[0]], T)[0]
    assert pgd["per_seed"][0]["test_loss"] == pytest.approx(direct["metrics"]["test"]["loss"], rel=1e-5)


def _runs(validation, test):
    """Hand-made per-seed results with these validation and test losses."""
    return [{"metrics": {"validation": {"loss": v}, "test": {"loss": t}}} for v, t in zip(validation, test)]


def test_select_best_uses_validation_not_test_loss_nonfinite_as_inf_and_first_on_ties():
    a = _runs([1.0, 1.0], [0.1, 0.1])  # best on test, worse on validation
    b = _runs([0.5, 0.7], [9.0, 9.0])  # best on validation
    assert evaluation.select_best([a, b]) == 1
    assert evaluation.select_best([_runs([0.1, math.nan], [0, 0]), _runs([2.0, 2.0], [0, 0])]) == 1
    assert evaluation.select_best([_runs([0.2, math.inf], [0, 0]), b]) == 1
    assert evaluation.select_best([b, _runs([0.5, 0.7], [0, 0])]) == 0
    with pytest.raises(ValueError, match="no candidates"):
        evaluation.select_best([])


def test_compare_rejects_unknown_baselines_and_mismatched_grids(eval_result):
    _, tiny, trained_like, config = eval_result
    with pytest.raises(ValueError, match="unknown baselines"):
        evaluation.compare(trained_like, config, [tiny], SEEDS, T, baselines=("sgd",))
    with pytest.raises(ValueError, match="exactly"):
        evaluation.compare(trained_like, config, [tiny], SEEDS, T, grid={"pgd": {"lr": (0.1,)}})
    with pytest.raises(ValueError, match="not among the baselines"):
        evaluation.compare(trained_like, config, [tiny], SEEDS, T, baselines=("prox_adam",), grid={"pgd": EVAL_GRID["pgd"]})


    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        evaluation.compare(trained_like, config, [tiny], SEEDS, 0)
    with pytest.raises(ValueError, match="no seeds"):
        evaluation.compare(trained_like, config, [tiny], [], T)


def test_the_old_import_path_warns_and_names_the_new_one():
    import importlib

    with pytest.warns(DeprecationWarning, match="import mapa_jax.evaluation instead"):
        import mapa_jax.meta.evaluate as old

        importlib.reload(old)
    with pytest.warns(DeprecationWarning, match="use mapa_jax.evaluation.compare"):
        assert old.compare is evaluation.compare
    with pytest.raises(AttributeError, match="mapa_jax.evaluation.run_seeds"):
        old.run  # noqa: B018 (removed: the second runner)
    with pytest.raises(AttributeError, match="mapa_jax.cli.evaluate"):
        old.main  # noqa: B018


def test_compare_with_sharpness_radii_adds_pga_sharpness_and_trains_as_without(eval_result):
    result, tiny, meta, config = eval_result
    radii = (0.01, 1.0)
    sharp = evaluation.compare(meta, config, [tiny], SEEDS, T, baselines=("pgd",),
                               grid={"pgd": {"learning_rate": (1e-1,), "l1": (1e-5,)}}, sharpness_radii=radii)
    assert sharp["config"]["sharpness_radii"] == list(radii) and result["config"]["sharpness_radii"] == []
    for name in ("mapa", "pgd"):  # pgd: the point the plain run chose
        s, plain = sharp["tasks"][tiny.name]["methods"][name], result["tasks"][tiny.name]["methods"][name]
        assert [r["test_loss"] for r in s["per_seed"]] == [r["test_loss"] for r in plain["per_seed"]], name
        assert "sharpness" not in plain and set(s["sharpness"]) == set(radii)
        for r in s["per_seed"]:  # a convex quadratic: the loss rises more within the larger ball
            assert 0 < r["sharpness"][0.01] < r["sharpness"][1.0], (name, r)
        assert s["sharpness"][1.0]["mean"] == pytest.approx(np.mean([r["sharpness"][1.0] for r in s["per_seed"]]))
    text = evaluation.markdown_report({"families": {"smoke": sharp}})
    assert "PGA sharpness" in text and "| r = 0.01 | r = 1 |" in text
    with pytest.raises(ValueError, match=r"compare: sharpness_radii: radius must be a finite number > 0, got -1"):
        evaluation.compare(meta, config, [tiny], SEEDS, T, baselines=(), sharpness_radii=(-1,))
