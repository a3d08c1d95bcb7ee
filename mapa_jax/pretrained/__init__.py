"""Shipped meta-learner weights and their provenance.

Each pretrained meta-learner is two files in this folder: ``NAME.msgpack``, the
meta-params serialized with ``flax.serialization`` (msgpack: arrays and dicts
only; reading it executes nothing), and ``NAME.json``, its provenance: the
:class:`MetaLearnerConfig`, the meta-training configuration and seed, the
command that produced it and the evaluation numbers measured after training.
They are written by ``mapa export`` from a meta-training checkpoint.
"""

from __future__ import annotations

import hashlib
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


#: The provenance field holding the SHA-256 of ``NAME.msgpack`` (written by :func:`export`).
CHECKSUM_FIELD = "weights_sha256"


def _read_info(info_path: str) -> dict:
    """The provenance JSON object of ``info_path``; ``ValueError`` naming the file if it is not one."""
    try:
        with open(info_path, encoding="utf-8") as f:
            info = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:  # truncated, bit-flipped, binary
        raise ValueError(f"{info_path} is not valid JSON (corrupt or truncated?): {e}") from e
    if not isinstance(info, dict):
        raise ValueError(f"{info_path} must hold a JSON object (the provenance), got a {type(info).__name__}.")
    return info


def _check_checksum(data: bytes, info: dict, weights: str, info_path: str) -> None:
    """If the provenance records the weights' SHA-256, the bytes read must have it."""
    if CHECKSUM_FIELD not in info:  # files exported before the checksum was recorded
        return
    expected = info[CHECKSUM_FIELD]
    if not isinstance(expected, str):
        raise ValueError(f"{info_path}: {CHECKSUM_FIELD} must be a hex string, got {type(expected).__name__}.")
    if hashlib.sha256(data).hexdigest() != expected.lower():
        raise ValueError(
            f"{weights} is corrupt or does not match its provenance: its SHA-256 differs from the "
            f"{CHECKSUM_FIELD} recorded in {info_path} "
            "(truncated, modified, or exported separately from that file)."
        )


def load_pretrained(name: str = DEFAULT, *, directory: Optional[str] = None, with_info: bool = False):
    """The shipped meta-learner: ``(meta_params, config)`` (and its provenance with ``with_info``).

    Reads ``NAME.json`` (JSON) and ``NAME.msgpack`` (msgpack: arrays and dicts
    only); nothing in either file is executed or unpickled.

    Usage::

        meta_params, config = mj.load_pretrained()
        tx = mj.mapa(meta_params, config)

    Raises:
      FileNotFoundError: no ``NAME.msgpack`` or ``NAME.json`` in the directory.
      ValueError: naming the file: a path that is not a regular file; a
        provenance file that is not a JSON object or has no valid
        ``meta_learner`` config; weights that are corrupt (unreadable msgpack,
        non-numeric entries, or a SHA-256 other than the provenance's
        ``weights_sha256``) or were built for another config.
    """
    from mapa_jax.mapa import check_meta_params, meta_params_shape

    weights, info_path = _paths(name, directory)
    if not os.path.exists(weights) or not os.path.exists(info_path):
        raise FileNotFoundError(
            f"no pretrained meta-learner {name!r} (looked for {weights} and {info_path}); "
            f"available: {available() if directory is None else 'see the directory'}."
        )
    for path in (weights, info_path):
        if not os.path.isfile(path):
            raise ValueError(f"{path} is not a regular file.")
    info = _read_info(info_path)
    try:
        config = MetaLearnerConfig.from_dict(info["meta_learner"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{info_path}: no valid meta_learner config: {e}") from e
    target = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), meta_params_shape(config))
    with open(weights, "rb") as f:
        data = f.read()
    _check_checksum(data, info, weights, info_path)
    try:
        state = flax.serialization.msgpack_restore(data)
        meta_params = flax.serialization.from_state_dict(target, state)
    except Exception as e:
        raise ValueError(f"{weights} is corrupt or does not match its config: {e}") from e
    for path, leaf in jax.tree_util.tree_leaves_with_path(meta_params):
        if not (isinstance(leaf, np.ndarray) and (np.issubdtype(leaf.dtype, np.floating)
                                                  or np.issubdtype(leaf.dtype, np.integer))):
            raise ValueError(
                f"{weights} is corrupt: meta_params{jax.tree_util.keystr(path)} is a "
                f"{type(leaf).__name__}{' of dtype ' + str(leaf.dtype) if hasattr(leaf, 'dtype') else ''}, "
                "expected a numeric array."
            )
    meta_params = jax.tree.map(lambda x: jax.numpy.asarray(x, jax.numpy.float32), meta_params)
    check_meta_params(meta_params, config)
    return (meta_params, config, info) if with_info else (meta_params, config)


def export(meta_params: Any, config: MetaLearnerConfig, info: dict, name: str, directory: Optional[str] = None) -> tuple[str, str]:
    """Writes ``NAME.msgpack`` and ``NAME.json`` (atomically: temp file, then rename).

    The provenance records the SHA-256 of the weights (``weights_sha256``),
    which :func:`load_pretrained` checks.
    """
    weights, info_path = _paths(name, directory)
    os.makedirs(os.path.dirname(weights), exist_ok=True)
    payload = flax.serialization.msgpack_serialize(
        flax.serialization.to_state_dict(jax.tree.map(np.asarray, meta_params))
    )
    info = {**info, "meta_learner": config.to_dict(), CHECKSUM_FIELD: hashlib.sha256(payload).hexdigest()}
    for path, mode, content in ((weights, "wb", payload), (info_path, "w", json.dumps(info, indent=2) + "\n")):
        tmp = path + ".tmp"
        with open(tmp, mode) as f:
            f.write(content)
        os.replace(tmp, path)
    return weights, info_path
