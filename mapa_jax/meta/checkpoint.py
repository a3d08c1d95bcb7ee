"""Checkpoints of meta-training with orbax-checkpoint: atomic, resumable, no pickle.

A checkpoint directory holds numbered steps (orbax's ``CheckpointManager``),
each with two items:

* ``state``: the whole :class:`~mapa_jax.meta.state.MetaTrainState` as one
  PyTree (meta-params, meta-optimizer state, accumulated meta-gradient, replay
  buffer, baselines, key, counters; arrays in tensorstore, numbers in its
  metadata), less the buffer's task names;
* ``meta``: JSON: ``format`` (2), the configs, the seed, the step and counters,
  the replay buffer's task names and the baselines (their groups are what it
  takes, with the configs, to know the state's structure before reading it).

Directories written before this layout (format 1: items ``meta_params``,
``train_state`` and ``meta``) still load and resume: :func:`restore_state`
and :func:`load_meta_params` read both.

Orbax writes a step to a temporary directory and renames it when complete, so
a run killed while saving leaves the previous step intact; the two newest steps
are kept. Loading reads arrays and JSON only: nothing in a checkpoint is
executed or unpickled.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from mapa_jax.config import MetaLearnerConfig
from mapa_jax.meta.state import MetaTrainState

__all__ = ["save_state", "restore_state", "latest_step", "read_meta", "load_meta_params", "CheckpointError",
           "FORMAT"]

#: The layout :func:`save_state` writes.
FORMAT = 2
_ITEMS = ("state", "meta")
_LEGACY_ITEMS = ("meta_params", "train_state")  # format 1, with "meta"


class CheckpointError(ValueError):
    """A checkpoint directory is missing, unreadable or does not match."""


def _manager(directory: str, *, create: bool) -> ocp.CheckpointManager:
    directory = os.path.abspath(directory)
    if not create and not os.path.isdir(directory):
        raise CheckpointError(f"no checkpoint directory at {directory!r}.")
    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=create, enable_async_checkpointing=False)
    return ocp.CheckpointManager(directory, options=options, item_names=_ITEMS + _LEGACY_ITEMS)


def _resolve_step(mngr: ocp.CheckpointManager, directory: str, step: Optional[int]) -> int:
    """``step``, or the newest complete one; an error if there is none."""
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise CheckpointError(f"{directory!r} holds no complete checkpoint.")
    if step not in mngr.all_steps():
        raise CheckpointError(f"{directory!r} has no complete step {step}; it has {sorted(mngr.all_steps())}.")
    return step


def latest_step(directory: str) -> Optional[int]:
    """The newest complete step in ``directory``, or None if there is none."""
    if not os.path.isdir(directory):
        return None
    with _manager(directory, create=False) as mngr:
        return mngr.latest_step()


def _state_tree(state: MetaTrainState) -> MetaTrainState:
    """What the ``state`` item holds: the state without its (string) task names."""
    return state._replace(buffer_tasks=())


def save_state(directory: str, state: MetaTrainState, info: dict) -> None:
    """Writes ``state`` as step ``state.step``, atomically (a crash mid-write leaves older steps intact).

    ``info``: JSON-able facts of the run (configs, seed) stored with it.
    """
    meta = {
        **info,
        "format": FORMAT,
        "step": state.step,
        "updates": state.updates,
        "skipped": state.skipped,
        "acc_count": state.acc_count,
        "baselines": state.baselines,
        "buffer_tasks": list(state.buffer_tasks),
    }
    json.dumps(meta)  # fail early, before writing anything, if meta is not JSON
    with _manager(directory, create=True) as mngr:
        mngr.save(
            state.step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(_state_tree(state)), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        mngr.wait_until_finished()


def _read_meta(mngr: ocp.CheckpointManager, step: int, directory: str) -> dict:
    """The ``meta`` item of ``step``: a JSON object with an integer ``format`` this version reads.

    Raises CheckpointError, naming the step and directory, for an unreadable
    file or a value of the wrong type.
    """
    try:
        meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # orbax raises several types for unreadable files
        raise CheckpointError(f"cannot read the metadata of step {step} in {directory!r}: {e}") from e
    where = f"the metadata (meta/metadata) of step {step} in {directory!r}"
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where} must be a JSON object, got a {type(meta).__name__}.")
    fmt = meta.get("format", 1)
    if isinstance(fmt, bool) or not isinstance(fmt, int) or not 1 <= fmt <= FORMAT:
        raise CheckpointError(
            f"{where}: field 'format' must be an integer from 1 to {FORMAT} (the layouts this version "
            f"reads), got {fmt!r}."
        )
    return meta


def _restore(mngr: ocp.CheckpointManager, step: int, directory: str, what: str, **items: Any) -> dict:
    try:
        return mngr.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:
        raise CheckpointError(
            f"{what} of checkpoint step {step} in {directory!r} do not match the expected structure "
            f"or are corrupt: {e}"
        ) from e


def _host(tree: Any) -> Any:
    return jax.tree.map(np.asarray, tree)


def restore_state(
    directory: str, abstract: Callable[[dict], MetaTrainState], step: Optional[int] = None
) -> tuple[MetaTrainState, dict]:
    """Restores ``(state, meta)`` from step ``step`` (default: the newest).

    Args:
      directory: the checkpoint directory.
      abstract: ``meta -> MetaTrainState`` of ``jax.ShapeDtypeStruct``s: the
        expected structure, from the checkpoint's JSON metadata (which may
        also be checked there, e.g. against the resuming run's config).
      step: which step (default: the newest complete one).
    """
    with _manager(directory, create=False) as mngr:
        step = _resolve_step(mngr, directory, step)
        meta = _read_meta(mngr, step, directory)
        like = abstract(meta)
        if meta.get("format", 1) >= 2:
            st = _restore(mngr, step, directory, "the state", state=ocp.args.StandardRestore(_state_tree(like)))["state"]
        else:  # format 1: meta_params, and the rest as a dict; counters in the JSON
            legacy = {"opt_state": like.opt_state, "grad_acc": like.grad_acc, "key": like.key,
                      "buffer": {str(i): b for i, b in enumerate(like.buffer)}}
            out = _restore(mngr, step, directory, "the arrays",
                           meta_params=ocp.args.StandardRestore(like.meta_params),
                           train_state=ocp.args.StandardRestore(legacy))
            ts = out["train_state"]
            st = MetaTrainState(out["meta_params"], ts["opt_state"], ts["grad_acc"], meta["acc_count"],
                                meta["baselines"], tuple(ts["buffer"][str(i)] for i in range(len(like.buffer))),
                                (), ts["key"], step, meta["updates"], meta["skipped"])
    st = st._replace(buffer=tuple(_host(b) for b in st.buffer), buffer_tasks=tuple(meta["buffer_tasks"]),
                     key=np.asarray(st.key), step=step)
    return st, meta


def read_meta(directory: str, step: Optional[int] = None) -> dict:
    """The JSON metadata (configs, seed, counters) of a checkpoint step (default: newest)."""
    with _manager(directory, create=False) as mngr:
        return _read_meta(mngr, _resolve_step(mngr, directory, step), directory)


def load_meta_params(directory: str, step: Optional[int] = None) -> tuple[Any, MetaLearnerConfig]:
    """``(meta_params, config)`` from a meta-training checkpoint directory (either format).

    Reads arrays and JSON only (no unpickling, no code from the files).

    Raises:
      CheckpointError: (a ValueError) naming the directory and step: no such
        directory, no complete step, unreadable or corrupt files, metadata
        that is not a JSON object or has a bad ``format`` or ``meta_learner``
        field, meta-params that do not match the recorded config.
    """
    from mapa_jax.mapa import check_meta_params, meta_params_shape  # local: avoids an import cycle

    with _manager(directory, create=False) as mngr:
        step = _resolve_step(mngr, directory, step)
        meta = _read_meta(mngr, step, directory)
        try:
            config = MetaLearnerConfig.from_dict(meta["meta_learner"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{directory!r}: metadata has no valid meta_learner config: {e}") from e
        like = meta_params_shape(config)
        if meta.get("format", 1) >= 2:
            # The state's structure needs the tasks; its meta_params need only the config.
            raw = _restore(mngr, step, directory, "the state", state=ocp.args.StandardRestore())["state"]
            try:
                meta_params = raw["meta_params"]
                check_meta_params(meta_params, config)
            except (KeyError, TypeError, ValueError) as e:
                raise CheckpointError(
                    f"meta_params of step {step} in {directory!r} do not match the config or are corrupt: {e}"
                ) from e
            meta_params = jax.tree.unflatten(jax.tree.structure(like), jax.tree.leaves(meta_params))
        else:
            meta_params = _restore(mngr, step, directory, "meta_params",
                                   meta_params=ocp.args.StandardRestore(like))["meta_params"]
    return meta_params, config
