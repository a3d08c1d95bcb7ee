"""benchmarks/guard_cost.py runs, prints its JSON, and its finiteness checks are exact."""

import importlib.util
import json
import pathlib

import jax.numpy as jnp
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("guard_cost", ROOT / "benchmarks" / "guard_cost.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_guard_cost_json_times_every_item_and_verifies_every_check(capsys):
    mod = _load()
    mod.main(["--params", "20000", "--layers", "2", "--rounds", "2", "--inner", "1", "--small-meta", "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    names = set(out["median_ms"])
    assert {"optax.sgd step", "learner alone", "learner + check"} <= names
    assert {f"check: {c}" for c in mod.CHECKS} <= names
    assert all(v > 0 for v in out["median_ms"].values())
    assert out["checks_verified"] == {c: [True, False, False] for c in mod.CHECKS}
    assert out["stream_floor"] == {"sgd": pytest.approx(4 / 3), "adam": pytest.approx(8 / 7)}


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf, -jnp.inf])
def test_every_finiteness_check_flags_one_bad_entry_in_any_tensor(bad):
    mod = _load()
    grads = [jnp.ones((3, 4)), jnp.full((5,), -2.0), jnp.zeros((2, 2, 2))]
    for name, check in mod.CHECKS.items():
        assert bool(check(grads)), name
        for i, g in enumerate(grads):
            poisoned = list(grads)
            poisoned[i] = g.reshape(-1).at[g.size - 1].set(bad).reshape(g.shape)
            assert not bool(check(poisoned)), (name, i)


def test_a_wrong_check_is_caught_before_timing():
    mod = _load()
    mod.CHECKS = {**mod.CHECKS, "always true": lambda gs: jnp.array(True)}
    with pytest.raises(AssertionError, match="always true"):
        mod.verify_checks([jnp.ones((4, 4)), jnp.ones((3,))])
