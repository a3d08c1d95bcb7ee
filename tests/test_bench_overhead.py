"""benchmarks/overhead.py runs, prints its JSON, and reports the non-finite guards."""

import importlib.util
import json
import pathlib

import jax.numpy as jnp

import mapa_jax as mj

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--params", "2000", "--layers", "2", "--rounds", "1", "--inner", "1", "--small-meta"]


def _load():
    spec = importlib.util.spec_from_file_location("overhead", ROOT / "benchmarks" / "overhead.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_overhead_json_times_every_row_with_the_guards_next_to_their_optimizers(capsys):
    mod = _load()
    mod.main(TINY + ["--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = set(out["median_step_ms"])
    for name in ("optax.sgd", "optax.adamw", "prox_adam"):
        assert {name, f"skip_nonfinite({name})", f"apply_if_finite({name})"} <= rows
        assert set(out["guards_over_sgd"][name]) == {"unguarded", "skip_nonfinite", "apply_if_finite"}
    assert {"mapa[sgd]", "mapa[adam]", "mapa[sgd,unguarded]", "mapa[adam,unguarded]"} <= rows
    assert all(v > 0 for v in out["median_step_ms"].values())
    assert out["guards_over_sgd"]["optax.sgd"]["unguarded"] == 1.0
    for key in ("skip_nonfinite_sgd_over_sgd", "mapa_adam_over_skip_nonfinite_prox_adam",
                "mapa_sgd_over_guarded_sgd", "mapa_adam_over_guarded_prox_adam", "mapa_sgd_over_sgd"):
        assert out["ratios"][key] > 0, key
    assert out["targets"]["skip_nonfinite_sgd_over_sgd"] == 1.6
    assert {"mapa[adam,distance,unguarded]", "mapa[adam,distance-sampled,unguarded]"} <= rows
    for key in ("distance_estimate_over_prox_adam", "distance_sampled_estimate_over_prox_adam"):
        assert key in out["ratios"] and out["targets"][key] == 0.1, key


def test_overhead_guard_rows_wrap_the_same_optimizers():
    mod = _load()
    txs = mod.optimizers(small=True)
    for name in mod.GUARDED:
        assert isinstance(txs[f"skip_nonfinite({name})"].init({"w": jnp.zeros((2, 2))}), mj.SkipNonfiniteState)
    assert not any("(" in name for name in mod.optimizers(small=True, guards=False))
