"""Tests for the numbers across tasks (mapa_jax/evaluation/stats.py) on hand-made
results: ranks, wins, performance, transfer, the paired sign test and bootstrap."""

import json
import math

import numpy as np
import pytest

from mapa_jax import evaluation


def _hand_made(losses):
    """A compare-shaped result: {task: {method: mean test loss}} (None: diverged)."""
    return {"tasks": {t: {"methods": {m: {"test_loss": {"mean": v, "std": 0.0}} for m, v in ms.items()}}
                      for t, ms in losses.items()}}


HAND = _hand_made({
    "t1": {"mapa": 1.0, "prox_adam": 2.0, "pgd": 3.0},
    "t2": {"mapa": 2.0, "prox_adam": 1.0, "pgd": 2.0},      # mapa ties pgd
    "t3": {"mapa": 0.5, "prox_adam": None, "pgd": math.inf},  # both baselines diverged
})


def test_mean_ranks_and_wins_on_a_hand_made_result():
    ranks = evaluation.mean_ranks(HAND)
    # t1: 1, 2, 3; t2: mapa and pgd share ranks 2-3 -> 2.5, prox_adam 1; t3: mapa 1, the diverged share 2.5.
    assert ranks == {"mapa": pytest.approx((1 + 2.5 + 1) / 3), "prox_adam": pytest.approx((2 + 1 + 2.5) / 3),
                     "pgd": pytest.approx((3 + 2.5 + 2.5) / 3)}
    assert evaluation.wins(HAND) == {"prox_adam": {"wins": 2, "losses": 1, "tasks": 3},
                             "pgd": {"wins": 2, "losses": 0, "tasks": 3}}
    assert evaluation.wins(HAND, "pgd")["mapa"] == {"wins": 0, "losses": 2, "tasks": 3}
    json_round_trip = json.loads(json.dumps(evaluation.jsonable(HAND)))  # inf -> None: same answers
    assert evaluation.mean_ranks(json_round_trip) == ranks and evaluation.wins(json_round_trip) == evaluation.wins(HAND)


def test_performance_and_transfer_score_follow_their_definition():
    p = evaluation.performance(HAND, "mapa", "prox_adam")
    assert p["value"] == pytest.approx((2.0 / 1.0 + 1.0 / 2.0) / 2)  # t3 left out: the reference diverged
    assert p["tasks"] == 2 and p["excluded"] == ["t3"]
    train = _hand_made({"a": {"mapa": 1.0, "prox_adam": 2.0}, "b": {"mapa": 2.0, "prox_adam": 2.0}})
    test = _hand_made({"c": {"mapa": 1.0, "prox_adam": 1.2}, "d": {"mapa": None, "prox_adam": 1.0}})
    tr = evaluation.transfer_score(train, test)
    assert tr["meta_train_performance"]["value"] == pytest.approx(1.5)
    assert tr["meta_test_performance"]["value"] == pytest.approx((1.2 + 0.0) / 2)  # mapa diverged on d: 0
    assert tr["score"] == pytest.approx(0.6 / 1.5)
    assert "meta_test" in tr["definition"]
    assert evaluation.transfer_score(train, _hand_made({"e": {"mapa": 1.0, "prox_adam": None}}))["score"] is None
    floor = _hand_made({"f": {"mapa": 0.0, "prox_adam": 0.0}, "g": {"mapa": 1.0, "prox_adam": 2.0}})
    assert evaluation.performance(floor, "mapa", "prox_adam")["value"] == pytest.approx((1.0 + 2.0) / 2)  # 0 vs 0: a tie


def _per_seed(losses):
    """A compare-shaped result from {task: {method: [test loss per seed]}} (None: diverged)."""
    def summary(values):
        finite = [v for v in values if v is not None]
        mean = float(np.mean(finite)) if len(finite) == len(values) else None
        return {"test_loss": {"mean": mean, "std": 0.0},
                "per_seed": [{"seed": i, "test_loss": v} for i, v in enumerate(values)]}
    return {"tasks": {t: {"methods": {m: summary(v) for m, v in ms.items()}} for t, ms in losses.items()}}


def test_paired_counts_seed_pairs_with_a_sign_test_and_bootstraps_the_geometric_mean():
    # 10 tasks x 1 seed where mapa is lower on 9: p = 2 * (C(10,0) + C(10,1)) / 2**10.
    res = _per_seed({f"t{i}": {"mapa": [1.0], "prox_adam": [2.0 if i else 0.5]} for i in range(10)})
    pr = evaluation.paired(res)
    assert (pr["wins"], pr["losses"], pr["ties"]) == (9, 1, 0)
    assert pr["sign_test_p"] == pytest.approx(2 * 11 / 1024)
    assert pr["geomean_ratio"] == pytest.approx(math.exp((9 * math.log(2.0) + math.log(0.5)) / 10))
    lo, hi = pr["ci95"]
    assert lo < pr["geomean_ratio"] < hi and 0.5 <= lo and hi <= 2.0
    assert evaluation.paired(res, resamples=500, seed=1)["geomean_ratio"] == pr["geomean_ratio"]
    # Equal everywhere: all ties, p = 1, a degenerate interval at 1.
    same = evaluation.paired(_per_seed({"a": {"mapa": [1.0, 2.0], "prox_adam": [1.0, 2.0]}}))
    assert (same["wins"], same["losses"], same["ties"], same["sign_test_p"]) == (0, 0, 2, 1.0)
    assert same["geomean_ratio"] == pytest.approx(1.0) and same["ci95"] == pytest.approx([1.0, 1.0])
    # A seed where mapa diverged is a loss; the task leaves the geometric mean.
    div = evaluation.paired(_per_seed({"a": {"mapa": [None, 1.0], "prox_adam": [1.0, 3.0]},
                               "b": {"mapa": [1.0, 1.0], "prox_adam": [2.0, 2.0]}}))
    assert (div["wins"], div["losses"], div["excluded"], div["tasks"]) == (3, 1, 1, 1)
    assert div["geomean_ratio"] == pytest.approx(2.0)
    # Without per-seed records: no pairs; results of compare have them.
    assert evaluation.paired(HAND)["wins"] + evaluation.paired(HAND)["losses"] == 0
    assert evaluation.paired(HAND, other="pgd")["tasks"] == 2
    with pytest.raises(ValueError, match="adamw"):
        evaluation.paired(HAND, other="adamw")
