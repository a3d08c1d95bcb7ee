"""Bi-level meta-training of the MAPA meta-learner (paper Section IV "Bi-Level
Optimization" and Section V "Training Protocol"): the loop.

:func:`meta_train` runs :meth:`~mapa_jax.meta.state.MetaTrainer.meta_update`
on a :class:`~mapa_jax.meta.state.MetaTrainState` (what a meta-step does is
documented there), logs each step to ``metrics.jsonl``, shows a progress bar,
checkpoints the state every ``checkpoint_every`` meta-updates
(:mod:`mapa_jax.meta.checkpoint`) and plots the curves at the end. The
configuration and its presets are in :mod:`mapa_jax.meta.config`.

Everything is a function of the seed: two runs with one seed give bit-identical
meta-params on CPU, and a run resumed from a checkpoint ends exactly where the
uninterrupted run does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Optional

import numpy as np

from mapa_jax import tasks as tasks_lib
from mapa_jax.mapa import init_meta_params
from mapa_jax.meta import checkpoint as ckpt
from mapa_jax.meta.config import META_LR_SCHEDULES, PRESETS, MetaTrainConfig, preset
from mapa_jax.meta.state import MetaTrainer, MetaTrainState, seed_keys
from mapa_jax.tasks.base import Task

__all__ = ["MetaTrainConfig", "PRESETS", "preset", "meta_train", "MetaTrainResult", "initial_meta_params",
           "resolve_tasks", "META_LR_SCHEDULES", "MetaTrainState"]


def resolve_tasks(spec: str) -> list[Task]:
    """Tasks named by a family name or a comma-separated list of task names."""
    return list(tasks_lib.family_from_spec(spec).tasks)


@dataclasses.dataclass
class MetaTrainResult:
    """What :func:`meta_train` returns."""

    meta_params: Any
    config: MetaTrainConfig
    metrics: list[dict[str, Any]]
    skipped_updates: int
    checkpoint_dir: Optional[str]


def initial_meta_params(config: MetaTrainConfig, seed: int) -> Any:
    """The meta-params a run with ``seed`` starts from (its random initialization)."""
    return init_meta_params(seed_keys(seed)[0], config.meta_learner)


def _restore(trainer: MetaTrainer, directory: str, seed: int) -> MetaTrainState:
    def abstract(meta: dict) -> MetaTrainState:
        saved = MetaTrainConfig.from_dict(meta["train_config"])
        if saved != trainer.cfg or meta["seed"] != seed:
            raise ckpt.CheckpointError(
                f"checkpoint in {directory!r} was written by another configuration or seed "
                f"(seed {meta['seed']}); resume with the same preset, overrides and seed."
            )
        return trainer.abstract_state(tuple(meta["buffer_tasks"]), tuple(meta["baselines"]))

    return ckpt.restore_state(directory, abstract)[0]


def meta_train(
    config: MetaTrainConfig | str = "smoke",
    *,
    checkpoint_dir: Optional[str] = None,
    seed: int = 0,
    resume: bool = False,
    devices: Optional[int] = None,
    progress: bool = True,
    on_step: Optional[Callable[[dict], None]] = None,
) -> MetaTrainResult:
    """Meta-trains a MAPA meta-learner.

    Args:
      config: a :class:`MetaTrainConfig` or a preset name (``"smoke"``, ``"default"``).
      checkpoint_dir: where checkpoints, ``metrics.jsonl`` and the training-curve
        plot go (None: nothing written).
      seed: the run's seed (meta-params init, task sampling, inner runs).
      resume: continue from the newest checkpoint in ``checkpoint_dir`` (an
        error if there is none, or it was written with another config or seed).
      devices: number of devices of the mesh (default: as many as divide
        ``meta_batch`` evenly). Results agree across device counts up to float
        rounding; bit-identical reruns need the same count.
      progress: show a progress bar with the meta-loss.
      on_step: called with each step's log record (for tests and notebooks).

    Returns:
      A :class:`MetaTrainResult`.
    """
    cfg = preset(config) if isinstance(config, str) else config
    if not isinstance(cfg, MetaTrainConfig):
        raise TypeError(f"meta_train: config must be a MetaTrainConfig or a preset name, got {type(config).__name__}.")
    if resume and checkpoint_dir is None:
        raise ValueError("meta_train: resume=True needs checkpoint_dir.")
    trainer = MetaTrainer(cfg, devices)
    if resume:
        st = _restore(trainer, checkpoint_dir, seed)
    else:
        if checkpoint_dir is not None and ckpt.latest_step(checkpoint_dir) is not None:
            raise ValueError(
                f"meta_train: {checkpoint_dir!r} already holds a checkpoint; pass resume=True "
                "(--resume) to continue it, or choose another directory."
            )
        st = trainer.init_state(seed)
    metrics_path = None
    if checkpoint_dir is not None:
        os.makedirs(checkpoint_dir, exist_ok=True)
        metrics_path = os.path.join(checkpoint_dir, "metrics.jsonl")
        if not resume and os.path.exists(metrics_path):
            os.remove(metrics_path)
        elif resume and os.path.exists(metrics_path):
            _truncate_metrics(metrics_path, st.step)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.meta_steps, initial=st.step, desc="meta-train", unit="step")
    records = []
    t0 = time.perf_counter()
    info = {"meta_learner": cfg.meta_learner.to_dict(), "train_config": cfg.to_dict(), "seed": seed}
    while st.step < cfg.meta_steps:
        st, record = trainer.meta_update(st)
        record["elapsed_s"] = round(time.perf_counter() - t0, 3)
        records.append(record)
        if metrics_path is not None:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if on_step is not None:
            on_step(record)
        if bar is not None:
            bar.update(1)
            if record["meta_loss"] is not None:
                bar.set_postfix(meta_loss=f"{record['meta_loss']:.4f}", task=record["task"][-24:])
        at_update = st.step % cfg.steps_per_update == 0
        if checkpoint_dir is not None and at_update and (
            (st.step // cfg.steps_per_update) % cfg.checkpoint_every == 0 or st.step >= cfg.meta_steps
        ):
            ckpt.save_state(checkpoint_dir, st, info)
    if bar is not None:
        bar.close()
    if checkpoint_dir is not None:
        if ckpt.latest_step(checkpoint_dir) != st.step:
            ckpt.save_state(checkpoint_dir, st, info)
        try:
            plot_metrics(metrics_path, os.path.join(checkpoint_dir, "metrics.png"))
        except Exception as e:  # a plot must never lose a finished run
            print(f"meta_train: could not write the plot: {e}")
    return MetaTrainResult(st.meta_params, cfg, records, st.skipped, checkpoint_dir)


def _truncate_metrics(path: str, step: int) -> None:
    """Drops log lines past ``step`` (written after the checkpoint a run resumes from)."""
    with open(path) as f:
        lines = [l for l in f if l.strip() and json.loads(l)["step"] <= step]
    with open(path, "w") as f:
        f.writelines(lines)


def plot_metrics(metrics_path: str, out_path: str) -> None:
    """Meta-training curves (meta-loss per task group, moving average) as a PNG."""
    # A Figure without pyplot: no backend switch in the caller's process
    # (a notebook keeps its inline backend), no global figure registry.
    from matplotlib.figure import Figure

    with open(metrics_path) as f:
        recs = [json.loads(l) for l in f if l.strip()]
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    def group(r: dict) -> str:  # logs written before the grouping was renamed say "family"
        return r.get("group", r.get("family", "?"))

    for g in sorted({group(r) for r in recs}):
        xs = [r["step"] for r in recs if group(r) == g and r["meta_loss"] is not None]
        ys = [r["meta_loss"] for r in recs if group(r) == g and r["meta_loss"] is not None]
        axes[0].plot(xs, ys, ".", alpha=0.4, label=g)
    ys = [r["meta_loss"] for r in recs if r["meta_loss"] is not None]
    if ys:
        w = max(1, len(ys) // 20)
        ma = np.convolve(ys, np.ones(w) / w, mode="valid")
        axes[0].plot(np.arange(len(ma)) + w, ma, "k-", label=f"moving mean ({w})")
    axes[0].set_xlabel("meta-step")
    axes[0].set_ylabel("meta-loss (final loss / initial loss)")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    axes[1].plot([r["step"] for r in recs], [r["T"] for r in recs], label="T (curriculum)")
    axes[1].plot([r["step"] for r in recs], [r["skipped_updates"] for r in recs], label="skipped updates")
    axes[1].set_xlabel("meta-step")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
