"""benchmarks/meta_train_cost.py runs, prints its JSON, and jax.checkpoint saves memory."""

import importlib.util
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_meta_train_cost_json_and_memory_savings(capsys):
    spec = importlib.util.spec_from_file_location("meta_train_cost", ROOT / "benchmarks" / "meta_train_cost.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--preset", "smoke", "--task", "synthetic/quadratic_tiny", "--ts", "16,64", "--repeats", "1",
              "--estimators", "tbptt,pes", "--draws", "2", "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["inner_steps_per_s"] > 0
    mem = {m["T"]: m for m in out["memory"]}
    assert set(mem) == {16, 64}
    # Without remat memory grows ~linearly in T; with it, sub-linearly and smaller.
    assert mem[64]["plain_bytes"] > 3 * mem[16]["plain_bytes"]
    assert mem[64]["checkpointed_bytes"] < 2 * mem[16]["checkpointed_bytes"]
    assert mem[64]["checkpointed_bytes"] < mem[64]["plain_bytes"] / 2
    # The estimators: TBPTT is deterministic given the trajectories (no spread); PES is not.
    est = {e["estimator"]: e for e in out["estimators"]}
    assert set(est) == {"tbptt", "pes"} and est["tbptt"]["cost_vs_tbptt"] == 1.0
    assert est["tbptt"]["relative_spread"] == 0.0 and abs(est["tbptt"]["cos_to_tbptt"] - 1.0) < 1e-6
    assert est["pes"]["relative_spread"] > 0 and est["pes"]["seconds_per_meta_step"] > 0
