"""benchmarks/adapt.py runs mj.adapt per task and reports before / after on the same evaluation seeds."""

import importlib.util
import json
import pathlib

import jax
import numpy as np

import mapa_jax as mj
from mapa_jax import evaluation, pretrained, tasks
from mapa_jax.meta.config import PRESETS

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_adapt_benchmark_reports_the_learner_before_and_after_adaptation(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("adapt_bench", ROOT / "benchmarks" / "adapt.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    config = PRESETS["smoke"].meta_learner
    meta = mj.init_meta_params(jax.random.key(7), config)
    pretrained.export(meta, config, {"note": "test"}, "tiny", str(tmp_path))
    argv = ["--pretrained", "tiny", "--pretrained-dir", str(tmp_path), "--families", "smoke",
            "--tasks-per-family", "1", "--seeds", "1", "--steps", "6", "--adapt-steps", "2", "--horizon", "3"]
    assert mod.main(argv) == 0
    out = capsys.readouterr().out
    rep = json.loads(out.strip().splitlines()[-1])
    (row,) = rep["rows"]
    assert row["task"] == tasks.TINY_TASK and row["adapt_inner_steps"] == 6 and row["skipped"] == 0
    # "before" is the learner as given, run as the evaluation runs it
    direct = evaluation.run_seeds(evaluation.MapaFactory(config), tasks.get_task(tasks.TINY_TASK), [0], 6, hparams=meta)
    assert row["before"] == [direct[0]["metrics"]["test"]["loss"]]
    assert row["after"] != row["before"] and np.isclose(row["ratio"], row["before"][0] / row["after"][0])
    assert "| before / after |" in out and rep["summary"]["tasks"] == 1
    assert mod.main(["--checkpoint-dir", str(tmp_path / "none")]) == 2
