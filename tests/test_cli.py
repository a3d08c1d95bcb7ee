"""Tests for the command line (mapa_jax/cli.py): `mapa meta-train` (kill and resume,
bad presets), `mapa export`, `mapa evaluate` and benchmarks/evaluate_meta.py, which
runs the same function."""

import contextlib
import importlib.util
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np

import mapa_jax as mj
from conftest import flat as _flat
from mapa_jax import cli, evaluation, pretrained, tasks
from mapa_jax.meta import checkpoint as ckpt
from mapa_jax.meta import train
from mapa_jax.meta.config import PRESETS

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = PRESETS["smoke"].meta_learner
T = 20  # as in test_evaluation_protocol.py: the compiled programs of the tiny task are shared


def _cli(*args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "mapa_jax.cli", "meta-train", "--preset", "smoke", "--no-progress", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw,
    )


def test_kill_and_resume_ends_with_the_same_meta_params(tmp_path, smoke_run):
    reference, _, _ = smoke_run
    d = str(tmp_path / "run")
    p = _cli("--checkpoint-dir", d, "--seed", "0", "--devices", "1")
    # Kill it at a random point after the first checkpoint exists.
    deadline = time.time() + 300
    while ckpt.latest_step(d) is None and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
    time.sleep(float(np.random.default_rng().uniform(0.0, 3.0)))
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert ckpt.latest_step(d) is not None
    p = _cli("--checkpoint-dir", d, "--seed", "0", "--resume", "--devices", "1")
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out[-2000:]
    resumed, _ = mj.load_meta_params(d)
    np.testing.assert_array_equal(_flat(resumed), _flat(reference.meta_params))
    steps = [json.loads(l)["step"] for l in open(os.path.join(d, "metrics.jsonl"))]
    assert steps == list(range(1, reference.config.meta_steps + 1))  # no gaps, no repeats


def test_meta_train_rejects_an_unknown_preset():
    p = _cli("--checkpoint-dir", "/tmp/unused", "--preset", "huge")
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 2 and "unknown preset 'huge'" in out and "smoke" in out


def test_export_writes_a_loadable_pretrained_meta_learner(tmp_path, smoke_run):
    result, d, _ = smoke_run
    assert cli.main(["export", "--checkpoint-dir", d, "--name", "smoke", "--out-dir", str(tmp_path)]) == 0
    meta, config, info = mj.load_pretrained("smoke", directory=str(tmp_path), with_info=True)
    assert config == result.config.meta_learner
    assert info["seed"] == 0 and info["meta_steps_run"] == result.config.meta_steps
    np.testing.assert_array_equal(_flat(meta), _flat(result.meta_params))
    assert cli.main(["export", "--checkpoint-dir", str(tmp_path / "missing")]) == 2


def test_evaluating_a_checkpoint_compares_with_the_runs_own_initialization(smoke_run):
    result, d, _ = smoke_run
    meta, config, source = cli._load_learner(cli._parser().parse_args(["evaluate", "--checkpoint-dir", d]))
    assert source["provenance"]["seed"] == 0
    start = cli.run_initialization(source, config)
    np.testing.assert_array_equal(_flat(start), _flat(train.initial_meta_params(result.config, 0)))
    assert not np.array_equal(_flat(start), _flat(meta))


def _trained_like():
    return mj.init_meta_params(jax.random.key(7), CONFIG)


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


def test_cli_quick_evaluates_an_exported_meta_learner_and_the_benchmark_agrees(tmp_path):
    pretrained.export(_trained_like(), CONFIG, {"note": "test"}, "tiny", str(tmp_path))
    argv = ["--pretrained", "tiny", "--pretrained-dir", str(tmp_path), "--families", "smoke", "--quick",
            "--steps", str(T), "--no-progress"]
    rc, out, err = _main(cli.main, ["evaluate", *argv])
    assert rc == 0, err
    rep = json.loads(out.strip().splitlines()[-1])
    assert rep["quick"] and rep["seeds"] == [0] and rep["steps"] == T
    assert rep["source"]["pretrained"] == "tiny"
    smoke = rep["families"]["smoke"]
    assert list(smoke["tasks"]) == [tasks.TINY_TASK, "breast_cancer/mlp_tanh_1x16"]  # the 2 smallest
    assert smoke["config"]["grids"]["pgd"] == {k: list(v) for k, v in evaluation.get_baseline("pgd").grid.items()}
    assert smoke["tasks"]["breast_cancer/mlp_tanh_1x16"]["metric"] == "accuracy"
    assert "transfer" not in rep  # needs both meta_train and meta_test
    assert "| task | metric | mapa | mapa_random_init | prox_adam | pgd | prox_rmsprop | adam | prodigy |" in out
    assert "### smoke: aggregates over 2 tasks" in out

    rc, bench_out, err = _main(_load_benchmark().main, [*argv, "--json"])
    assert rc == 0, err
    assert len(bench_out.strip().splitlines()) == 1  # --json: the JSON line only
    bench = json.loads(bench_out)
    assert bench["families"]["smoke"]["aggregates"] == smoke["aggregates"]  # same code, same numbers


def test_cli_first_seed_evaluates_later_seeds_and_rejects_negative_ones(tmp_path):
    pretrained.export(_trained_like(), CONFIG, {"note": "test"}, "tiny", str(tmp_path))
    argv = ["evaluate", "--pretrained", "tiny", "--pretrained-dir", str(tmp_path), "--families", "smoke", "--quick",
            "--steps", str(T), "--no-progress", "--json"]
    rc, out, err = _main(cli.main, [*argv, "--seeds", "2", "--first-seed", "3", "--baselines", "adam,prodigy",
                                    "--sharpness"])
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["seeds"] == [3, 4]
    assert rep["families"]["smoke"]["config"]["methods"] == ["mapa", "adam", "prodigy"]
    assert rep["families"]["smoke"]["config"]["sharpness_radii"] == list(evaluation.RADII)
    for entry in rep["families"]["smoke"]["tasks"].values():
        for method in entry["methods"].values():
            assert [r["seed"] for r in method["per_seed"]] == [3, 4]
            assert list(method["sharpness"]) == [str(r) for r in evaluation.RADII]  # JSON keys
    rc, out, err = _main(cli.main, [*argv, "--first-seed", "-1"])
    assert rc == 2 and out == "" and "--first-seed must be >= 0, got -1" in err
    rc, out, err = _main(cli.main, [*argv, "--baselines", "adam,nope"])
    assert rc == 2 and out == "" and "unknown baselines ['nope']" in err
    rc, out, err = _main(cli.main, [*argv, "--long-horizon"])  # argv gives --steps
    assert rc == 2 and out == "" and "--steps or --long-horizon, not both" in err


def test_cli_evaluate_explains_how_to_get_a_meta_learner_when_none_is_shipped(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", str(tmp_path))
    rc, out, err = _main(cli.main, ["evaluate", "--quick"])
    assert rc == 2 and out == ""
    assert "no pretrained meta-learner 'default' is shipped" in err and "mapa meta-train" in err
    rc, _, err = _main(cli.main, ["evaluate", "--pretrained", "nope", "--pretrained-dir", str(tmp_path)])
    assert rc == 2 and "cannot load" in err and "nope" in err
    rc, _, err = _main(cli.main, ["evaluate", "--families", "meta_train,bogus"])
    assert rc == 2 and "bogus" in err
