"""Tests for the LASSO benchmark (benchmarks/lasso.py): its JSON and its FISTA."""

import contextlib
import importlib.util
import io
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load_benchmark():
    """Imports benchmarks/lasso.py by path (benchmarks/ is not an installed package)."""
    name = "_mapa_bench_lasso"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "lasso.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


lasso = _load_benchmark()

# Tiny instances: seeds 0 and 1 at 20 x 40 take 148 and 152 PGD iterations and
# 48 and 43 FISTA iterations (FISTA needed fewer on each of seeds 0..29).
TINY = ["--instances", "2", "--m", "20", "--n", "40", "--max-iters", "3000", "--seed", "0",
        "--repeats", "1", "--adam-lrs", "0.1,0.001"]
METHOD_KEYS = {"reached", "unconfirmed_stop", "iters", "iters_run", "time_ms", "run_ms",
               "matvecs", "final_rel_subopt", "loop_rel_subopt", "best_rel_subopt", "nnz"}
SUMMARY_KEYS = {"reached", "unconfirmed_stops", "instances", "median_iters", "median_time_ms",
                "median_matvecs", "median_run_ms", "median_final_rel_subopt",
                "median_best_rel_subopt"}


def _run_main(argv):
    """main(argv) with stdout captured; returns (stdout, the last line parsed as JSON)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        lasso.main(argv)
    out = buf.getvalue()
    return out, json.loads(out.strip().splitlines()[-1])


# One test for the whole tiny run, so that pytest-xdist workers do not each repeat it.
def test_main_json_reports_pgd_and_fista_reaching_tol_with_fista_in_fewer_iterations():
    out, result = _run_main([*TINY, "--safeguard-draws", "2", "--json"])
    assert len(out.strip().splitlines()) == 1  # --json: the JSON line only

    # Structure.
    assert result["benchmark"] == "lasso"
    cfg = result["config"]
    assert (cfg["m"], cfg["n"], cfg["instances"], cfg["max_iters"]) == (20, 40, 2, 3000)
    assert cfg["tol"] == 1e-6 and cfg["dtype"] == "float32"
    assert cfg["adam_lrs"] == [0.1, 0.001]
    assert 0 < cfg["loop_tol"] < cfg["tol"]
    assert set(result["summary"]) == set(lasso.METHODS) == {"pgd", "fista_bt", "prox_adam"}
    for name, summary in result["summary"].items():
        assert SUMMARY_KEYS <= set(summary), name
        assert summary["instances"] == 2
        assert 0 <= summary["reached"] <= 2
    assert len(result["instances"]) == 2
    for inst in result["instances"]:
        assert inst["reference"]["rel_disagreement"] <= lasso.REF_AGREEMENT
        for name in lasso.METHODS:
            row = inst["methods"][name]
            assert METHOD_KEYS <= set(row), (name, set(row))
            if row["reached"]:
                assert row["iters"] == row["iters_run"] <= cfg["max_iters"]
                assert row["final_rel_subopt"] <= cfg["tol"]
            else:  # honest reporting: no iteration count, but the best it attained
                assert row["iters"] is None and row["time_ms"] is None
                assert row["best_rel_subopt"] is not None
        assert inst["methods"]["prox_adam"]["lr"] in cfg["adam_lrs"]
        assert len(inst["methods"]["prox_adam"]["lr_sweep"]) == 2

    # PGD and FISTA reach the tolerance (confirmed in float64); FISTA needs fewer iterations.
    for name in ("pgd", "fista_bt"):
        assert result["summary"][name]["reached"] == 2, name
        assert result["summary"][name]["unconfirmed_stops"] == 0, name
    for inst in result["instances"]:
        pgd, fista = inst["methods"]["pgd"], inst["methods"]["fista_bt"]
        assert fista["iters"] < pgd["iters"], inst["seed"]
    assert result["summary"]["fista_bt"]["median_iters"] < result["summary"]["pgd"]["median_iters"]

    # Safeguarded MAPA from random (5x scaled) meta-params: one draw per instance, and it converges
    # (the guarantee), accepting some of the proposals and counting its products honestly.
    for inst in result["instances"]:
        (label, row), = inst["safeguarded"].items()
        assert label.startswith("random_") and METHOD_KEYS | {"accepted"} <= set(row)
        assert row["reached"] and row["final_rel_subopt"] <= cfg["tol"], (inst["seed"], row)
        assert 0 <= row["accepted"] <= row["iters"]
        assert row["matvecs"] == 2 + 5 * row["iters"] - row["accepted"]
    guarded = result["safeguarded_summary"]["random"]
    assert guarded["runs"] == guarded["reached"] == 2 and guarded["median_iters_over_fista"] > 0

    # The markdown table has a row per method, then the safeguarded table.
    lines = lasso.markdown_table(result).splitlines()
    assert lines[0].startswith("| method | reached | median iters | median time ms |")
    assert len(lines) == 2 + len(lasso.METHODS) + 4
    assert lines[2].startswith("| pgd | 2/2 |")
    assert lines[-1].startswith("| random meta-params (5x scale) | 2/2 |")


def _kkt_violation(problem, x):
    """max over coordinates of the distance from -grad_i to l1 * d|x_i| (float64 numpy)."""
    grad = problem.A.T @ (problem.A @ x - problem.b) / problem.A.shape[0]
    nz = x != 0
    on_support = np.abs(grad[nz] + problem.l1 * np.sign(x[nz]))
    off_support = np.maximum(np.abs(grad[~nz]) - problem.l1, 0.0)
    return max(on_support.max(initial=0.0), off_support.max(initial=0.0)), int(nz.sum())


@pytest.mark.parametrize("seed", [3, 4])
def test_fista_solution_satisfies_lasso_kkt_conditions_in_float64(seed):
    problem = lasso.make_problem(seed, m=30, n=60)
    with jax.enable_x64(True):
        result = lasso.fista(problem.A, problem.b, problem.l1, grad_map_tol=1e-12)
        x = np.asarray(result.x)
        assert x.dtype == np.float64
        assert float(result.grad_map) <= 1e-12  # stopped on the tolerance, not the budget
        assert float(result.lipschitz) <= 2.0 * problem.lipschitz  # L_k <= eta L
    violation, nnz = _kkt_violation(problem, x)
    assert 0 < nnz < problem.A.shape[1]  # both kinds of condition are exercised
    assert violation <= 1e-10 * problem.l1, violation


def test_fista_kkt_check_rejects_a_perturbed_solution():
    """The KKT check above is not vacuous: moving the solution a little breaks it."""
    problem = lasso.make_problem(3, m=30, n=60)
    with jax.enable_x64(True):
        x = np.array(lasso.fista(problem.A, problem.b, problem.l1).x)
    x[np.flatnonzero(x)[0]] *= 1.0 + 1e-6
    assert _kkt_violation(problem, x)[0] > 1e-10 * problem.l1


def test_rel_subopt_in_float32_is_within_the_loop_margin_of_float64():
    problem = lasso.make_problem(3, m=30, n=60)
    with jax.enable_x64(True):
        x_star = np.asarray(lasso.fista(problem.A, problem.b, problem.l1).x)
    f_star = lasso.objective64(problem, x_star)
    opt = lasso.make_optimum(problem, x_star, f_star, jnp.float32)
    A = jnp.asarray(problem.A, jnp.float32)
    b = jnp.asarray(problem.b, jnp.float32)
    margin = lasso.MONITOR_MARGIN_EPS * float(jnp.finfo(jnp.float32).eps)
    rng = np.random.default_rng(0)
    support = x_star != 0
    for _ in range(20):
        x = (x_star + 1e-4 * rng.standard_normal(60) * support).astype(np.float32)
        estimate = float(lasso.rel_subopt(jnp.asarray(x), A @ jnp.asarray(x) - b, problem.l1, opt))
        exact = (lasso.objective64(problem, x) - f_star) / f_star
        assert 0 < exact < 1e-4
        assert abs(estimate - exact) <= margin, (estimate, exact)


def test_make_problem_data_are_float32_representable():
    problem = lasso.make_problem(0, m=20, n=40)
    np.testing.assert_array_equal(problem.A, problem.A.astype(np.float32))
    np.testing.assert_array_equal(problem.b, problem.b.astype(np.float32))
    assert np.count_nonzero(problem.x_true) == 4
