"""Tests for the comparison protocol (mapa_jax/meta/evaluate.py), `mapa evaluate` and
benchmarks/evaluate_meta.py. Tiny: the 20-parameter quadratic, short T, tiny grids."""

import contextlib
import importlib.util
import io
import json
import math
import pathlib

import jax
import numpy as np
import pytest

import mapa_jax as mj
from mapa_jax import cli, pretrained, tasks
from mapa_jax.meta import evaluate as ev
from mapa_jax.meta.train import PRESETS

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = PRESETS["smoke"].meta_learner  # the tiny learner (LSTM 16, GNN 8)
T = 20  # shared with the CLI test below, so the compiled programs are reused
SEEDS = [0, 1]
# lr 0.1 drives the quadratic far lower in 20 steps than lr 1e-4, which barely moves it.
GRID = {"prox_adam": {"learning_rate": (1e-2,), "l1": (1e-4,)},
        "pgd": {"learning_rate": (1e-4, 1e-1), "l1": (1e-5,)}}
METHODS = ["mapa", "mapa_random_init", "prox_adam", "pgd", "prox_rmsprop"]


@pytest.fixture(scope="module")
def tiny():
    return tasks.get_task(tasks.TINY_TASK)


@pytest.fixture(scope="module")
def trained_like():
    """Meta-params other than the random init of compare (stands in for a trained learner)."""
    return mj.init_meta_params(jax.random.key(7), CONFIG)


@pytest.fixture(scope="module")
def result(tiny, trained_like):
    return ev.compare(trained_like, CONFIG, [tiny], SEEDS, T, grid=GRID)


def test_run_seeds_matches_run_seed_by_seed(tiny, trained_like):
    factory = ev.mapa_factory(trained_like, CONFIG)
    batched = ev.run_seeds(factory, tiny, SEEDS, T)
    for seed, got in zip(SEEDS, batched):
        want = ev.run(factory, tiny, seed, T)
        assert got["seed"] == seed and got["task"] == tiny.name
        np.testing.assert_allclose(got["losses"], want["losses"], rtol=1e-5, atol=1e-6)
        for split in ("train", "validation", "test"):
            assert got["metrics"][split].keys() == want["metrics"][split].keys()
            for k in want["metrics"][split]:
                assert got["metrics"][split][k] == pytest.approx(want["metrics"][split][k], rel=1e-5, abs=1e-6)
        assert got["sparsity"] == want["sparsity"] and got["finite"] == want["finite"]
        assert got["steps_to_95"] == want["steps_to_95"]


def test_compare_reports_every_method_with_seed_statistics(result, tiny):
    assert result["config"]["methods"] == METHODS
    assert result["config"]["seeds"] == SEEDS and result["config"]["steps"] == T
    assert result["config"]["eval_seed_offset"] == ev.EVAL_SEED_OFFSET
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
        assert s["wall_s"] >= 0
    assert entry["methods"]["prox_rmsprop"]["hparams"] == {"learning_rate": 1e-3, "l1": 1e-5}  # untuned default
    assert entry["methods"]["mapa"]["hparams"] is None
    # Different meta-params, different runs: mapa is not its random initialization.
    assert entry["methods"]["mapa"]["test_loss"]["mean"] != entry["methods"]["mapa_random_init"]["test_loss"]["mean"]
    assert set(result["aggregates"]) == {"mean_rank", "wins", "paired", "performance"}
    json.dumps(ev._jsonable(result), allow_nan=False)  # plain JSON


def test_grid_search_picks_the_lowest_validation_loss_and_reports_its_test_numbers(result, tiny, trained_like):
    pgd = result["tasks"][tiny.name]["methods"]["pgd"]
    assert [g["hparams"]["learning_rate"] for g in pgd["grid"]] == [1e-4, 1e-1]
    vals = [g["validation_loss"] for g in pgd["grid"]]
    assert vals[1] < vals[0]  # the known winner: lr 0.1
    assert pgd["hparams"] == {"learning_rate": 1e-1, "l1": 1e-5}
    assert pgd["test_loss"]["mean"] == pytest.approx(pgd["grid"][1]["test_loss"])
    # The reported numbers are those of a direct run of the chosen setting.
    direct = ev.run(lambda task: mj.proximal_gradient(0.1, l1=1e-5), tiny, SEEDS[0], T)
    assert pgd["per_seed"][0]["test_loss"] == pytest.approx(direct["metrics"]["test"]["loss"], rel=1e-5)


def _runs(validation, test):
    """Hand-made per-seed results with these validation and test losses."""
    return [{"metrics": {"validation": {"loss": v}, "test": {"loss": t}}} for v, t in zip(validation, test)]


def test_select_best_uses_validation_not_test_loss_nonfinite_as_inf_and_first_on_ties():
    a = _runs([1.0, 1.0], [0.1, 0.1])  # best on test, worse on validation
    b = _runs([0.5, 0.7], [9.0, 9.0])  # best on validation
    assert ev.select_best([a, b]) == 1
    assert ev.select_best([_runs([0.1, math.nan], [0, 0]), _runs([2.0, 2.0], [0, 0])]) == 1
    assert ev.select_best([_runs([0.2, math.inf], [0, 0]), b]) == 1
    assert ev.select_best([b, _runs([0.5, 0.7], [0, 0])]) == 0
    with pytest.raises(ValueError, match="no candidates"):
        ev.select_best([])


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
    ranks = ev.mean_ranks(HAND)
    # t1: 1, 2, 3; t2: mapa and pgd share ranks 2-3 -> 2.5, prox_adam 1; t3: mapa 1, the diverged share 2.5.
    assert ranks == {"mapa": pytest.approx((1 + 2.5 + 1) / 3), "prox_adam": pytest.approx((2 + 1 + 2.5) / 3),
                     "pgd": pytest.approx((3 + 2.5 + 2.5) / 3)}
    assert ev.wins(HAND) == {"prox_adam": {"wins": 2, "losses": 1, "tasks": 3},
                             "pgd": {"wins": 2, "losses": 0, "tasks": 3}}
    assert ev.wins(HAND, "pgd")["mapa"] == {"wins": 0, "losses": 2, "tasks": 3}
    json_round_trip = json.loads(json.dumps(ev._jsonable(HAND)))  # inf -> None: same answers
    assert ev.mean_ranks(json_round_trip) == ranks and ev.wins(json_round_trip) == ev.wins(HAND)


def test_performance_and_transfer_score_follow_their_definition():
    p = ev.performance(HAND, "mapa", "prox_adam")
    assert p["value"] == pytest.approx((2.0 / 1.0 + 1.0 / 2.0) / 2)  # t3 left out: the reference diverged
    assert p["tasks"] == 2 and p["excluded"] == ["t3"]
    train = _hand_made({"a": {"mapa": 1.0, "prox_adam": 2.0}, "b": {"mapa": 2.0, "prox_adam": 2.0}})
    test = _hand_made({"c": {"mapa": 1.0, "prox_adam": 1.2}, "d": {"mapa": None, "prox_adam": 1.0}})
    tr = ev.transfer_score(train, test)
    assert tr["meta_train_performance"]["value"] == pytest.approx(1.5)
    assert tr["meta_test_performance"]["value"] == pytest.approx((1.2 + 0.0) / 2)  # mapa diverged on d: 0
    assert tr["score"] == pytest.approx(0.6 / 1.5)
    assert "meta_test" in tr["definition"]
    assert ev.transfer_score(train, _hand_made({"e": {"mapa": 1.0, "prox_adam": None}}))["score"] is None


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
    pr = ev.paired(res)
    assert (pr["wins"], pr["losses"], pr["ties"]) == (9, 1, 0)
    assert pr["sign_test_p"] == pytest.approx(2 * 11 / 1024)
    assert pr["geomean_ratio"] == pytest.approx(math.exp((9 * math.log(2.0) + math.log(0.5)) / 10))
    lo, hi = pr["ci95"]
    assert lo < pr["geomean_ratio"] < hi and 0.5 <= lo and hi <= 2.0
    assert ev.paired(res, resamples=500, seed=1)["geomean_ratio"] == pr["geomean_ratio"]
    # Equal everywhere: all ties, p = 1, a degenerate interval at 1.
    same = ev.paired(_per_seed({"a": {"mapa": [1.0, 2.0], "prox_adam": [1.0, 2.0]}}))
    assert (same["wins"], same["losses"], same["ties"], same["sign_test_p"]) == (0, 0, 2, 1.0)
    assert same["geomean_ratio"] == pytest.approx(1.0) and same["ci95"] == pytest.approx([1.0, 1.0])
    # A seed where mapa diverged is a loss; the task leaves the geometric mean.
    div = ev.paired(_per_seed({"a": {"mapa": [None, 1.0], "prox_adam": [1.0, 3.0]},
                               "b": {"mapa": [1.0, 1.0], "prox_adam": [2.0, 2.0]}}))
    assert (div["wins"], div["losses"], div["excluded"], div["tasks"]) == (3, 1, 1, 1)
    assert div["geomean_ratio"] == pytest.approx(2.0)
    # Without per-seed records: no pairs; results of compare have them.
    assert ev.paired(HAND)["wins"] + ev.paired(HAND)["losses"] == 0
    assert ev.paired(HAND, other="pgd")["tasks"] == 2
    with pytest.raises(ValueError, match="adamw"):
        ev.paired(HAND, other="adamw")


def test_compare_aggregates_and_report_include_the_paired_comparison(result):
    pr = result["aggregates"]["paired"]["prox_adam"]
    assert pr["wins"] + pr["losses"] + pr["ties"] == len(SEEDS)
    assert 0.0 < pr["sign_test_p"] <= 1.0
    rep = {"families": {"meta_train": result}}
    assert "sign test p" in ev.markdown_report(rep)


def test_compare_rejects_unknown_baselines_and_mismatched_grids(tiny, trained_like):
    with pytest.raises(ValueError, match="unknown baselines"):
        ev.compare(trained_like, CONFIG, [tiny], SEEDS, T, baselines=("adamw",))
    with pytest.raises(ValueError, match="exactly"):
        ev.compare(trained_like, CONFIG, [tiny], SEEDS, T, grid={"pgd": {"lr": (0.1,)}})
    with pytest.raises(ValueError, match="not among the baselines"):
        ev.compare(trained_like, CONFIG, [tiny], SEEDS, T, baselines=("prox_adam",), grid={"pgd": GRID["pgd"]})


def _main(fn, argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = fn(argv)
    return rc, out.getvalue(), err.getvalue()


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("_mapa_bench_evaluate_meta", ROOT / "benchmarks" / "evaluate_meta.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_quick_evaluates_an_exported_meta_learner_and_the_benchmark_agrees(tmp_path, trained_like):
    pretrained.export(trained_like, CONFIG, {"note": "test"}, "tiny", str(tmp_path))
    argv = ["--pretrained", "tiny", "--pretrained-dir", str(tmp_path), "--families", "smoke", "--quick",
            "--steps", str(T), "--no-progress"]
    rc, out, err = _main(cli.main, ["evaluate", *argv])
    assert rc == 0, err
    rep = json.loads(out.strip().splitlines()[-1])
    assert rep["quick"] and rep["seeds"] == [0] and rep["steps"] == T
    assert rep["source"]["pretrained"] == "tiny"
    smoke = rep["families"]["smoke"]
    assert list(smoke["tasks"]) == [tasks.TINY_TASK, "breast_cancer/mlp_tanh_1x16"]  # the 2 smallest
    assert smoke["config"]["grids"]["pgd"] == {k: list(v) for k, v in ev.BASELINES["pgd"].grid.items()}
    assert smoke["tasks"]["breast_cancer/mlp_tanh_1x16"]["metric"] == "accuracy"
    assert "transfer" not in rep  # needs both meta_train and meta_test
    assert "| task | metric | mapa | mapa_random_init | prox_adam | pgd | prox_rmsprop |" in out
    assert "### smoke: aggregates over 2 tasks" in out

    rc, bench_out, err = _main(_load_benchmark().main, [*argv, "--json"])
    assert rc == 0, err
    assert len(bench_out.strip().splitlines()) == 1  # --json: the JSON line only
    bench = json.loads(bench_out)
    assert bench["families"]["smoke"]["aggregates"] == smoke["aggregates"]  # same code, same numbers


def test_cli_first_seed_evaluates_later_seeds_and_rejects_negative_ones(tmp_path, trained_like):
    pretrained.export(trained_like, CONFIG, {"note": "test"}, "tiny", str(tmp_path))
    argv = ["evaluate", "--pretrained", "tiny", "--pretrained-dir", str(tmp_path), "--families", "smoke", "--quick",
            "--steps", str(T), "--no-progress", "--json"]
    rc, out, err = _main(cli.main, [*argv, "--seeds", "2", "--first-seed", "3"])
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["seeds"] == [3, 4]
    for entry in rep["families"]["smoke"]["tasks"].values():
        for method in entry["methods"].values():
            assert [r["seed"] for r in method["per_seed"]] == [3, 4]
    rc, out, err = _main(cli.main, [*argv, "--first-seed", "-1"])
    assert rc == 2 and out == "" and "--first-seed must be >= 0, got -1" in err


def test_cli_evaluate_explains_how_to_get_a_meta_learner_when_none_is_shipped(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", str(tmp_path))
    rc, out, err = _main(cli.main, ["evaluate", "--quick"])
    assert rc == 2 and out == ""
    assert "no pretrained meta-learner 'default' is shipped" in err and "mapa meta-train" in err
    rc, _, err = _main(cli.main, ["evaluate", "--pretrained", "nope", "--pretrained-dir", str(tmp_path)])
    assert rc == 2 and "cannot load" in err and "nope" in err
    rc, _, err = _main(cli.main, ["evaluate", "--families", "meta_train,bogus"])
    assert rc == 2 and "bogus" in err
