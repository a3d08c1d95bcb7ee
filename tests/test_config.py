"""Tests for the meta-learner configuration (mapa_jax/config.py): validation and
its JSON form."""

import json

import pytest

import mapa_jax as mj


def test_config_rejects_out_of_range_values():
    for kw, match in [
        (dict(direction="newton"), "direction must be one of"),
        (dict(operator="l0"), "operator must be one of"),
        (dict(window=0), "window must be an integer >= 1"),
        (dict(eta_max=-1.0), "eta_max must be a finite number > 0"),
        (dict(tau_max=float("inf")), "tau_max must be a finite number > 0"),
        (dict(init_eta=1.0), "init_eta must be in the open interval"),
        (dict(b2=1.0), "b2 must be in"),
        (dict(film_heads=1), "film_heads must be a bool"),
        (dict(film_heads=True, use_architecture=False), "film_heads=True needs use_architecture=True"),
    ]:
        with pytest.raises(ValueError, match=match):
            mj.MetaLearnerConfig(**kw)


def test_config_round_trips_through_json_and_rejects_unknown_fields():
    cfg = mj.MetaLearnerConfig(direction="sgd", operator="soft_threshold", window=6, film_heads=True)
    assert mj.MetaLearnerConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert mj.learned_optimizer_config().use_architecture is False
    with pytest.raises((TypeError, ValueError), match="lstm_size"):
        mj.MetaLearnerConfig.from_dict({**cfg.to_dict(), "lstm_size": 3})
