"""Tests for the report (mapa_jax/evaluation/markdown.py): markdown tables and plain JSON."""

import json
import math

import numpy as np

from conftest import EVAL_SEEDS
from mapa_jax import evaluation


def test_compare_aggregates_and_report_include_the_paired_comparison(eval_result):
    result = eval_result[0]
    pr = result["aggregates"]["paired"]["prox_adam"]
    assert pr["wins"] + pr["losses"] + pr["ties"] == len(EVAL_SEEDS)
    assert 0.0 < pr["sign_test_p"] <= 1.0
    rep = {"families": {"meta_train": result}}
    assert "sign test p" in evaluation.markdown_report(rep)




def test_markdown_shows_every_method_the_chosen_grid_point_and_divergence(eval_result):
    result, task, _, _ = eval_result
    diverged = json.loads(json.dumps(evaluation.jsonable(result)))
    diverged["tasks"][task.name]["methods"]["pgd"]["test_loss"]["mean"] = None
    diverged["tasks"][task.name]["methods"]["pgd"]["finite_fraction"] = 0.5
    text = evaluation.markdown_report({"families": {"smoke": diverged}})
    assert ("| task | metric | mapa | mapa_random_init | prox_adam | pgd | prox_rmsprop | adam | prodigy "
            "| schedule_free_adamw | dadapt_adamw | adamw |") in text
    assert ("| task | prox_adam (learning_rate / l1) | pgd (learning_rate / l1) | prox_rmsprop (learning_rate / l1) "
            "| adamw (learning_rate) |") in text  # zero-config ones choose nothing
    adamw_lr = result["tasks"][task.name]["methods"]["adamw"]["hparams"]["learning_rate"]
    assert f"| {task.name} | 0.01 / 0.0001 | 0.1 / 1e-05 | 0.001 / 1e-05 | {adamw_lr:g} |" in text
    assert "diverged (50% of seeds finite)" in text
    mapa = result["tasks"][task.name]["methods"]["mapa"]["test_loss"]["mean"]
    assert f"{mapa:.4g}" in text


def test_jsonable_is_plain_json_with_nonfinite_as_null():
    x = {"a": np.float32(1.5), "b": (np.int64(2), math.inf), "c": {1: math.nan, "d": np.bool_(True)}}
    assert evaluation.jsonable(x) == {"a": 1.5, "b": [2, None], "c": {"1": None, "d": True}}
    json.dumps(evaluation.jsonable(x), allow_nan=False)
