"""The shipped meta-learner loads safely and works; export round-trips; bad files fail clearly."""

import json

import jax
import numpy as np
import pytest

import mapa_jax as mj
from mapa_jax import pretrained

TINY = mj.MetaLearnerConfig(lstm_hidden=8, gnn_hidden=8, window=4)


def test_shipped_default_loads_and_matches_its_config():
    assert "default" in pretrained.available()
    meta, config, info = mj.load_pretrained(with_info=True)
    assert isinstance(config, mj.MetaLearnerConfig)
    assert "produced_by" in info
    # Every shipped learner carries the checksum load_pretrained verifies.
    for name in pretrained.available():
        assert len(mj.load_pretrained(name, with_info=True)[2][pretrained.CHECKSUM_FIELD]) == 64, name
    tx = mj.mapa(meta, config)  # validates meta_params against the config
    params = {"w": np.ones((3, 2), np.float32)}
    u, _ = tx.update({"w": np.ones((3, 2), np.float32)}, tx.init(params), params)
    assert np.all(np.isfinite(u["w"]))


def test_export_then_load_round_trips(tmp_path):
    meta = mj.init_meta_params(jax.random.key(3), TINY)
    pretrained.export(meta, TINY, {"produced_by": "test"}, "tiny", directory=str(tmp_path))
    loaded, config = mj.load_pretrained("tiny", directory=str(tmp_path))
    assert config == TINY
    for a, b in zip(jax.tree.leaves(meta), jax.tree.leaves(loaded)):
        np.testing.assert_array_equal(a, b)


def test_missing_corrupt_or_mismatched_files_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no pretrained meta-learner 'nope'"):
        mj.load_pretrained("nope")
    meta = mj.init_meta_params(jax.random.key(3), TINY)
    pretrained.export(meta, TINY, {}, "tiny", directory=str(tmp_path))
    (tmp_path / "tiny.msgpack").write_bytes(b"\x93not msgpack at all")
    with pytest.raises(ValueError, match="corrupt or does not match"):
        mj.load_pretrained("tiny", directory=str(tmp_path))
    pretrained.export(meta, TINY, {}, "tiny", directory=str(tmp_path))
    info = json.loads((tmp_path / "tiny.json").read_text())
    info["meta_learner"]["lstm_hidden"] = 16  # weights no longer match the config
    (tmp_path / "tiny.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="built for another config"):
        mj.load_pretrained("tiny", directory=str(tmp_path))
