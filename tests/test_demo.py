"""Tests for mapa_jax/demo.py and its command line (`mapa demo`), and for the expected time
that `mapa evaluate` prints at its start (mapa_jax/cli.py)."""

import math

import numpy as np
import pytest

from mapa_jax import cli, demo

STEPS = 3  # one compiled chunk per optimizer: the test pays three small compiles


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo.png"
    return demo.run_demo(str(out), steps=STEPS, progress=False), out


def test_run_demo_writes_a_png_with_the_loss_panel_and_three_proximal_parameter_panels(tiny_demo):
    rep, out = tiny_demo
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert len(rep["panels"]) == 4
    assert rep["panels"][0].startswith("loss")
    assert [t.split()[1] for t in rep["panels"][1:]] == ["step", "lambda", "tau"]


def test_run_demo_returns_finite_numbers_for_the_three_optimizers(tiny_demo):
    rep, _ = tiny_demo
    assert list(rep["optimizers"]) == list(demo.OPTIMIZERS) == ["mapa", "adam", "prodigy"]
    for name, r in rep["optimizers"].items():
        for key in ("train_loss", "test_loss", "test_accuracy", "sparsity", "ms_per_step", "compile_s"):
            assert math.isfinite(r[key]), (name, key, r[key])
        assert 0.0 <= r["test_accuracy"] <= 1.0 and 0.0 <= r["sparsity"] <= 1.0
        assert r["loss_curve"].shape == (STEPS,) and np.all(np.isfinite(r["loss_curve"]))
        assert r["test_curve"].shape == rep["curve_steps"].shape == (2,)  # at 0 and after the one chunk
    # Same initialization and minibatches: the first minibatch loss is the same for all three.
    first = [r["loss_curve"][0] for r in rep["optimizers"].values()]
    np.testing.assert_allclose(first, first[0], rtol=1e-6)


def test_run_demo_logs_mapas_proximal_parameters_per_step_and_tensor_within_their_bounds(tiny_demo):
    rep, _ = tiny_demo
    import mapa_jax as mj

    _, config = mj.load_pretrained()
    n = len(rep["tensors"])
    assert n == 8 and rep["tensors"][0] == "Conv_0/bias"
    for key, bound in (("eta", config.eta_max), ("lam", np.inf), ("tau", config.tau_max)):
        values = rep["proximal_parameters"][key]
        assert values.shape == (STEPS, n)
        assert np.all(np.isfinite(values)) and np.all(values > 0) and np.all(values <= bound), key


def test_format_table_has_a_row_per_optimizer_and_names_the_lowest_test_loss(tiny_demo):
    rep, _ = tiny_demo
    table = demo.format_table(rep)
    rows = [l for l in table.splitlines() if l.startswith("| ") and "---" not in l]
    assert len(rows) == 4  # header + 3
    assert "lowest test loss:" in table


@pytest.mark.parametrize("steps", [0, -1])
def test_mapa_demo_with_steps_below_one_exits_2_naming_steps(steps, capsys):
    assert cli.main(["demo", "--steps", str(steps), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--steps" in err and ">= 1" in err


def test_mapa_demo_with_an_unwritable_out_exits_2_naming_out(tmp_path, capsys):
    for out in (str(tmp_path / "missing" / "x.png"), str(tmp_path), str(tmp_path / "x.txt"), "/proc/demo.png"):
        assert cli.main(["demo", "--out", out, "--steps", "1", "--no-progress"]) == 2, out
        err = capsys.readouterr().err
        assert "--out" in err, (out, err)
    assert list(tmp_path.iterdir()) == []  # checking the path leaves nothing behind


def test_run_demo_rejects_bad_steps_before_any_work():
    for steps in (0, 1.5, True):
        with pytest.raises(ValueError, match="--steps"):
            demo.run_demo(None, steps=steps)


def test_expected_time_counts_tasks_programs_and_grid_runs():
    methods, programs, runs = cli.evaluation_size()
    assert (methods, programs) == (10, 9)  # mapa, its random init and 8 baselines; the two MAPAs share a program
    assert runs == 26  # 1 + 1 + prox_adam 3x2 + pgd 3x3 + prox_rmsprop 1 + 4 zero-config + adamw 4
    small, big = cli.expected_seconds(4, 1, 50), cli.expected_seconds(20, 3, 200)
    assert 0 < small < big
    assert cli.expected_seconds(20, 3, 400) > big
    assert "about" in cli.expected_time_message(20, 3, 200) and "minutes" in cli.expected_time_message(20, 3, 200)


def test_mapa_evaluate_prints_its_expected_time_to_stderr_before_running(monkeypatch, capsys):
    from mapa_jax import evaluation

    class Started(Exception):
        pass

    def report(*args, **kwargs):
        assert "expected about" in capsys.readouterr().err  # already printed when the run starts
        raise Started

    monkeypatch.setattr(evaluation, "report", report)
    with pytest.raises(Started):
        cli.main(["evaluate", "--quick", "--no-progress"])
    assert capsys.readouterr().out == ""  # stdout stays markdown + JSON
