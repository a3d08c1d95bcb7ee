"""Shipped meta-learner weights and their provenance.

Each pretrained meta-learner is two files in this folder: ``NAME.msgpack``, the
meta-params serialized with ``flax.serialization`` (msgpack: arrays and dicts
only; reading it executes nothing), and ``NAME.json``, its provenance: the
:class:`MetaLearnerConfig`, the meta-training configuration and seed, the
command that produced it and the evaluation numbers measured after training.
They are written by ``mapa export`` from a meta-training checkpoint.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import flax.serialization
import jax
import numpy as np

from mapa_jax.config import MetaLearnerConfig

__all__ = ["load_pretrained", "available", "export", "PRETRAINED_DIR"]

PRETRAINED_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT = "default"


def available() -> list[str]:
    """Names of the shipped meta-learners."""
    return sorted(f[: -len(".msgpack")] for f in os.listdir(PRETRAINED_DIR) if f.endswith(".msgpack"))


def _paths(name: str, directory: Optional[str]) -> tuple[str, str]:
    d = PRETRAINED_DIR if directory is None else directory
    return os.path.join(d, f"{name}.msgpack"), os.path.join(d, f"{name}.json")


def load_pretrained(name: str = DEFAULT, *, directory: Optional[str] = None, with_info: bool = False):
    """The shipped meta-learner: ``(meta_params, config)`` (and its provenance with ``with_info``).

    Usage::

        meta_params, config = mj.load_pretrained()
        tx = mj.mapa(meta_params, config)
    """
    from mapa_jax.mapa import check_meta_params, meta_params_shape

    weights, info_path = _paths(name, directory)
    if not os.path.exists(weights) or not os.path.exists(info_path):
        raise FileNotFoundError(
            f"no pretrained meta-learner {name!r} (looked for {weights} and {info_path}); "
            f"available: {available() if directory is None else 'see the directory'}."
        )
    with open(info_path) as f:
        info = json.load(f)
    try:
        config = MetaLearnerConfig.from_dict(info["meta_learner"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{info_path}: no valid meta_learner config: {e}") from e
    target = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), meta_params_shape(config))
    with open(weights, "rb") as f:
        data = f.read()
    try:
        state = flax.serialization.msgpack_restore(data)
        meta_params = flax.serialization.from_state_dict(target, state)
    except Exception as e:
        raise ValueError(f"{weights} is corrupt or does not match its config: {e}") from e
    meta_params = jax.tree.map(lambda x: jax.numpy.asarray(x, jax.numpy.float32), meta_params)
    check_meta_params(meta_params, config)
    return (meta_params, config, info) if with_info else (meta_params, config)


def export(meta_params: Any, config: MetaLearnerConfig, info: dict, name: str, directory: Optional[str] = None) -> tuple[str, str]:
    """Writes ``NAME.msgpack`` and ``NAME.json`` (atomically: temp file, then rename)."""
    weights, info_path = _paths(name, directory)
    os.makedirs(os.path.dirname(weights), exist_ok=True)
    payload = flax.serialization.msgpack_serialize(
        flax.serialization.to_state_dict(jax.tree.map(np.asarray, meta_params))
    )
    info = {**info, "meta_learner": config.to_dict()}
    for path, mode, content in ((weights, "wb", payload), (info_path, "w", json.dumps(info, indent=2) + "\n")):
        tmp = path + ".tmp"
        with open(tmp, mode) as f:
            f.write(content)
        os.replace(tmp, path)
    return weights, info_path
