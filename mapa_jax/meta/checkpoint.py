"""Checkpoints of meta-training with orbax-checkpoint: atomic, resumable, no pickle.

A checkpoint directory holds numbered steps (orbax's ``CheckpointManager``),
each with three items:

* ``meta_params``: the meta-learner's parameters (arrays, tensorstore);
* ``train_state``: meta-optimizer state, replay buffer, RNG key, baselines
  (arrays, tensorstore);
* ``meta``: JSON: the configs, the step, the replay buffer's task names and
  counters.

Orbax writes a step to a temporary directory and renames it when complete, so
a run killed while saving leaves the previous step intact; the two newest steps
are kept. Loading reads arrays and JSON only: nothing in a checkpoint is
executed or unpickled.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from mapa_jax.config import MetaLearnerConfig

__all__ = ["save", "restore", "latest_step", "read_meta", "load_meta_params", "CheckpointError"]

_ITEMS = ("meta_params", "train_state", "meta")


class CheckpointError(ValueError):
    """A checkpoint directory is missing, unreadable or does not match."""


def _manager(directory: str, *, create: bool) -> ocp.CheckpointManager:
    directory = os.path.abspath(directory)
    if not create and not os.path.isdir(directory):
        raise CheckpointError(f"no checkpoint directory at {directory!r}.")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=2, create=create, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager(directory, options=options, item_names=_ITEMS)


def latest_step(directory: str) -> Optional[int]:
    """The newest complete step in ``directory``, or None if there is none."""
    if not os.path.isdir(directory):
        return None
    with _manager(directory, create=False) as mngr:
        return mngr.latest_step()


def save(directory: str, step: int, meta_params: Any, train_state: Any, meta: dict) -> None:
    """Writes step ``step`` atomically (a crash mid-write leaves older steps intact)."""
    json.dumps(meta)  # fail early, before writing anything, if meta is not JSON
    with _manager(directory, create=True) as mngr:
        mngr.save(
            step,
            args=ocp.args.Composite(
                meta_params=ocp.args.StandardSave(meta_params),
                train_state=ocp.args.StandardSave(train_state),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )
        mngr.wait_until_finished()


def _read_meta(mngr: ocp.CheckpointManager, step: int, directory: str) -> dict:
    try:
        return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # orbax raises several types for unreadable files
        raise CheckpointError(f"cannot read the metadata of step {step} in {directory!r}: {e}") from e


def restore(directory: str, abstract: Any, step: Optional[int] = None) -> tuple[int, Any, Any, dict]:
    """Restores ``(step, meta_params, train_state, meta)``.

    Args:
      directory: the checkpoint directory.
      abstract: a callable ``meta -> (meta_params_like, train_state_like)``
        giving the expected structures (e.g. ``jax.eval_shape`` results) from
        the checkpoint's JSON metadata.
      step: which step (default: the newest).
    """
    with _manager(directory, create=False) as mngr:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{directory!r} holds no complete checkpoint.")
        meta = _read_meta(mngr, step, directory)
        mp_like, ts_like = abstract(meta)
        try:
            out = mngr.restore(
                step,
                args=ocp.args.Composite(
                    meta_params=ocp.args.StandardRestore(mp_like),
                    train_state=ocp.args.StandardRestore(ts_like),
                ),
            )
        except Exception as e:
            raise CheckpointError(
                f"checkpoint step {step} in {directory!r} does not match the expected structure "
                f"or is corrupt: {e}"
            ) from e
    return step, out["meta_params"], out["train_state"], meta


def read_meta(directory: str, step: Optional[int] = None) -> dict:
    """The JSON metadata (configs, seed, counters) of a checkpoint step (default: newest)."""
    with _manager(directory, create=False) as mngr:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{directory!r} holds no complete checkpoint.")
        return _read_meta(mngr, step, directory)


def load_meta_params(directory: str, step: Optional[int] = None) -> tuple[Any, MetaLearnerConfig]:
    """``(meta_params, config)`` from a meta-training checkpoint directory.

    Reads arrays and JSON only (no unpickling, no code from the files).
    """
    from mapa_jax.mapa import init_meta_params  # local: avoids an import cycle

    with _manager(directory, create=False) as mngr:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{directory!r} holds no complete checkpoint.")
        meta = _read_meta(mngr, step, directory)
        try:
            config = MetaLearnerConfig.from_dict(meta["meta_learner"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{directory!r}: metadata has no valid meta_learner config: {e}") from e
        like = jax.eval_shape(lambda: init_meta_params(jax.random.key(0), config))
        try:
            out = mngr.restore(
                step, args=ocp.args.Composite(meta_params=ocp.args.StandardRestore(like))
            )
        except Exception as e:
            raise CheckpointError(
                f"meta_params of step {step} in {directory!r} do not match the config or are corrupt: {e}"
            ) from e
    return out["meta_params"], config
