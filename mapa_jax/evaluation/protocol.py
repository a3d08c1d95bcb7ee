"""The paper's comparison protocol (Section V): MAPA against tuned baselines on held-out seeds.

* :func:`compare`: per task, MAPA, its random initialization and the
  registered baselines (:mod:`~mapa_jax.evaluation.baselines`), each tuned
  per task on the validation loss (:func:`select_best`) and reported on the
  test split; every method trains from the same initializations and
  minibatches (:func:`~mapa_jax.evaluation.run_seeds`);
* :func:`report`: :func:`compare` on each task family, plus the architecture
  transfer score when both ``"meta_train"`` and ``"meta_test"`` are run: what
  ``mapa evaluate`` and ``benchmarks/evaluate_meta.py`` print (:data:`QUICK`
  is their ``--quick``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np
import optax

from mapa_jax.config import MetaLearnerConfig
from mapa_jax.evaluation.baselines import (
    BASELINES,
    DEFAULT_BASELINES,
    MAPA_RANDOM_INIT,
    TRANSFER_REFERENCE,
    get_baseline,
)
from mapa_jax.evaluation.runner import EVAL_SEED_OFFSET, SPARSITY_THRESHOLD, run_seeds
from mapa_jax.evaluation.sharpness import check_radius
from mapa_jax.evaluation.stats import _finite_or, aggregate, transfer_score
from mapa_jax.mapa import init_meta_params, mapa
from mapa_jax.tasks.base import Task

__all__ = ["MapaFactory", "compare", "select_best", "report", "QUICK", "LONG_HORIZON_FACTOR", "default_steps"]


@dataclasses.dataclass(frozen=True)
class MapaFactory:
    """``(task, meta_params) -> mapa(meta_params, config, graph=task.graph(), total_steps=total_steps)``,
    for :func:`run_seeds`.

    The meta-params are the traced ``hparams``: one compiled program per
    (config, task, T) serves every meta-learner of that config. ``total_steps``
    (the run's T, for a ``horizon_aware`` learner; :func:`compare` passes it)
    defaults to None: the learner is not told the length.
    """

    config: MetaLearnerConfig
    total_steps: Optional[int] = None

    def __call__(self, task: Task, meta_params: Any) -> optax.GradientTransformation:
        return mapa(meta_params, self.config, graph=task.graph(), total_steps=self.total_steps)


def _grid_points(grid: Mapping[str, Sequence[float]]) -> list[dict[str, float]]:
    names = list(grid)
    points = [{}]
    for name in names:
        points = [{**p, name: float(v)} for p in points for v in grid[name]]
    return points


def _mean_over_seeds(runs: Sequence[Mapping[str, Any]], split: str, metric: str = "loss") -> float:
    """Mean over seeds; a non-finite value makes it inf (as in every number of :func:`compare`)."""
    return float(np.mean([_finite_or(r["metrics"][split].get(metric), np.inf) for r in runs]))


def select_best(candidates: Sequence[Sequence[Mapping[str, Any]]], split: str = "validation") -> int:
    """Index of the candidate (a list of per-seed :func:`run_seeds` records) with the lowest mean ``split`` loss.

    Non-finite losses count as inf; ties go to the first candidate (grid order).
    """
    if not candidates:
        raise ValueError("select_best: no candidates.")
    return int(np.argmin([_mean_over_seeds(runs, split) for runs in candidates]))


def _stats(values: Sequence[Any], bad: float) -> dict[str, Optional[float]]:
    arr = np.asarray([_finite_or(v, bad) for v in values], np.float64)
    if np.all(np.isfinite(arr)):
        return {"mean": float(arr.mean()), "std": float(arr.std())}
    return {"mean": float(np.mean(arr)) if not np.any(np.isnan(arr)) else math.nan, "std": math.nan}


def _metric_name(runs: Sequence[Mapping[str, Any]]) -> Optional[str]:
    names = [k for k in runs[0]["metrics"]["test"] if k != "loss"]
    for preferred in ("accuracy", "r2", "suboptimality"):
        if preferred in names:
            return preferred
    return names[0] if names else None


def _summary(runs: Sequence[Mapping[str, Any]], metric: Optional[str]) -> dict[str, Any]:
    """Per-method numbers of one task: mean/std over seeds and the per-seed values."""
    reached = [r["steps_to_95"] for r in runs if r["steps_to_95"] is not None]
    out = {
        "test_loss": _stats([r["metrics"]["test"]["loss"] for r in runs], math.inf),
        "validation_loss": _stats([r["metrics"]["validation"]["loss"] for r in runs], math.inf),
        "train_loss": _stats([r["metrics"]["train"]["loss"] for r in runs], math.inf),
        "test_metric": _stats([r["metrics"]["test"].get(metric) for r in runs], math.nan) if metric else None,
        "steps_to_95": {"mean": float(np.mean(reached)) if reached else None,
                        "std": float(np.std(reached)) if reached else None,
                        "reached": len(reached)},
        "sparsity": _stats([r["sparsity"] for r in runs], math.nan),
        "finite_fraction": float(np.mean([r["finite"] for r in runs])),
        "per_seed": [
            {"seed": r["seed"], "test_loss": r["metrics"]["test"]["loss"],
             "validation_loss": r["metrics"]["validation"]["loss"],
             "test_metric": r["metrics"]["test"].get(metric) if metric else None,
             "steps_to_95": r["steps_to_95"], "sparsity": r["sparsity"], "finite": r["finite"],
             **({"sharpness": r["sharpness"]} if "sharpness" in r else {})}
            for r in runs
        ],
    }
    if "sharpness" in runs[0]:
        out["sharpness"] = {radius: _stats([r["sharpness"][radius] for r in runs], math.nan)
                            for radius in runs[0]["sharpness"]}
    return out


def compare(
    meta_params: Any,
    config: MetaLearnerConfig,
    tasks: Sequence[Task],
    seeds: Sequence[int],
    steps: int,
    *,
    baselines: Sequence[str] = DEFAULT_BASELINES,
    grid: Optional[Mapping[str, Mapping[str, Sequence[float]]]] = None,
    random_meta_params: Any = None,
    reference: str = TRANSFER_REFERENCE,
    progress: bool = False,
    sharpness_radii: Sequence[float] = (),
) -> dict[str, Any]:
    """MAPA against baselines on held-out seeds: the paper's comparison protocol.

    Per task, every method trains from the same initializations (seeds offset
    by :data:`EVAL_SEED_OFFSET`) for ``steps`` steps on the same minibatches:

    * ``"mapa"``: ``mapa(meta_params, config, graph=task.graph())`` (with
      ``total_steps=steps`` for a ``config.horizon_aware`` learner);
    * ``"mapa_random_init"``: the same config at ``random_meta_params``
      (default ``init_meta_params(jax.random.key(0), config)``);
    * the registered baselines (:data:`BASELINES`; by default the grid-tuned
      ``"prox_adam"``, ``"pgd"`` and ``"adamw"``, the untuned ``"prox_rmsprop"``
      and the zero-config ``"adam"``, ``"prodigy"``, ``"schedule_free_adamw"``
      and ``"dadapt_adamw"``): every point of the grid is run on every
      seed; the point with the lowest mean *validation* loss is chosen per task
      and its *test* numbers are reported. (Deterministic synthetic tasks have
      one objective for every split, so there selection and report coincide.)

    Args:
      meta_params, config: the meta-learner under test.
      tasks: the tasks.
      seeds: evaluation seeds (see :data:`EVAL_SEED_OFFSET`).
      steps: T, the inner steps per run.
      baselines: which of ``"mapa_random_init"`` and :data:`BASELINES` to run.
      grid: per-baseline grid overrides, e.g. ``{"pgd": {"learning_rate":
        (0.1,), "l1": (1e-4,)}}``; a baseline's hyperparameter names must match.
      random_meta_params: the random initialization to compare with.
      reference: the baseline of :func:`mapa_jax.evaluation.performance` in the aggregates.
      progress: a tqdm progress bar (one tick per method and grid point).
      sharpness_radii: radii at which every run's final point also gets its
        PGA sharpness (:func:`run_seeds`; e.g.
        :data:`~mapa_jax.evaluation.sharpness.RADII`); empty: none.

    Returns:
      ``{"config": ..., "tasks": {name: {"kind", "num_params", "metric",
      "methods": {method: summary}}}, "aggregates": aggregate(...)}``, where a
      method's summary holds mean/std over seeds of the final test loss
      (``test_loss``), validation and train loss, ``test_metric`` (accuracy,
      R^2 or suboptimality, named by the task's ``metric``), ``steps_to_95``
      (mean/std over the seeds that reached it, and how many did),
      ``sparsity`` (fraction of weight-tensor entries with ``|w| < 1e-6``),
      ``finite_fraction`` (seeds whose loss curve stayed finite), the
      per-seed values, ``sharpness`` (with ``sharpness_radii``: per radius,
      mean/std over seeds), ``wall_s`` (compile and run) and, for tuned
      baselines, ``hparams`` (the chosen point) and ``grid`` (every point's
      mean validation and test loss). Means count a non-finite loss as inf.
    """
    seeds = [int(s) for s in seeds]
    if not tasks:
        raise ValueError("compare: no tasks.")
    if not seeds:
        raise ValueError("compare: no seeds.")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"compare: steps must be an integer >= 1, got {steps!r}.")
    known = (MAPA_RANDOM_INIT, *BASELINES)
    unknown = [b for b in baselines if b not in known]
    if unknown:
        raise ValueError(f"compare: unknown baselines {unknown}; known: {list(known)}.")
    entries = {name: get_baseline(name) for name in baselines if name != MAPA_RANDOM_INIT}
    grids = {name: dict(entry.grid) for name, entry in entries.items()}
    for name, g in (grid or {}).items():
        if name not in grids:
            raise ValueError(f"compare: grid given for {name!r}, which is not among the baselines run {list(grids)}.")
        names = entries[name].grid
        if set(g) != set(names) or any(len(v) == 0 for v in g.values()):
            raise ValueError(
                f"compare: grid[{name!r}] must give non-empty values for exactly {sorted(names)}, got {dict(g)}."
            )
        grids[name] = {k: tuple(float(x) for x in g[k]) for k in names}
    for r in sharpness_radii:
        check_radius(r, "compare: sharpness_radii")
    if MAPA_RANDOM_INIT in baselines and random_meta_params is None:
        random_meta_params = init_meta_params(jax.random.key(0), config)

    units = len(tasks) * (1 + (MAPA_RANDOM_INIT in baselines) + sum(len(_grid_points(g)) for g in grids.values()))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=units, desc="evaluate", unit="run")

    def tick(label: str) -> None:
        if bar is not None:
            bar.set_postfix_str(label[-40:])
            bar.update(1)

    out_tasks = {}
    for task in tasks:
        methods: dict[str, Any] = {}
        metric = None
        mapa_runs = [("mapa", meta_params)]
        if MAPA_RANDOM_INIT in baselines:
            mapa_runs.append((MAPA_RANDOM_INIT, random_meta_params))
        for name, mp in mapa_runs:
            t0 = time.perf_counter()
            factory = MapaFactory(config, steps if config.horizon_aware else None)  # told T when it can use it
            runs = run_seeds(factory, task, seeds, steps, hparams=mp, sharpness_radii=sharpness_radii)
            metric = metric or _metric_name(runs)
            methods[name] = {**_summary(runs, metric), "hparams": None,
                             "wall_s": round(time.perf_counter() - t0, 3)}
            tick(f"{task.name} {name}")
        for name, entry in entries.items():
            t0 = time.perf_counter()
            points = _grid_points(grids[name])
            candidates = []
            for hp in points:
                candidates.append(run_seeds(entry.make, task, seeds, steps,
                                            hparams={k: np.float32(v) for k, v in hp.items()},
                                            eval_params=entry.eval_params, sharpness_radii=sharpness_radii))
                tick(f"{task.name} {name}")
            best = select_best(candidates)
            methods[name] = {
                **_summary(candidates[best], metric),
                "hparams": points[best],
                "grid": [{"hparams": hp, "validation_loss": _mean_over_seeds(c, "validation"),
                          "test_loss": _mean_over_seeds(c, "test"),
                          "finite_fraction": float(np.mean([r["finite"] for r in c]))}
                         for hp, c in zip(points, candidates)],
                "wall_s": round(time.perf_counter() - t0, 3),
            }
        out_tasks[task.name] = {"kind": task.kind, "num_params": int(task.num_params), "metric": metric,
                                "methods": methods}
    if bar is not None:
        bar.close()
    result = {
        "config": {"steps": steps, "seeds": seeds, "eval_seed_offset": EVAL_SEED_OFFSET,
                   "methods": ["mapa", *baselines], "grids": grids, "selection": "validation loss",
                   "meta_learner": config.to_dict(), "sparsity_threshold": SPARSITY_THRESHOLD,
                   "sharpness_radii": [float(r) for r in sharpness_radii]},
        "tasks": out_tasks,
    }
    result["aggregates"] = aggregate(result, reference=reference if reference in baselines else None)
    return result


#: ``--quick``: one seed, the two smallest tasks of each family, T = 50.
QUICK = {"seeds": 1, "tasks_per_family": 2, "steps": 50}


#: ``--long-horizon``: T is this many times the default preset's ``inner_steps``.
LONG_HORIZON_FACTOR = 5


def default_steps() -> int:
    """T of the shipped meta-learner's training: the ``"default"`` preset's ``inner_steps``."""
    from mapa_jax.meta.config import PRESETS  # local: meta-training's configuration, needed here only

    return PRESETS["default"].inner_steps


def _family_tasks(name: str, limit: Optional[int]) -> list[Task]:
    from mapa_jax import tasks as tasks_lib

    fam = list(tasks_lib.family(name).tasks)
    if limit is not None:  # the smallest, in the family's order
        keep = {t.name for t in sorted(fam, key=lambda t: (t.num_params, t.name))[:limit]}
        fam = [t for t in fam if t.name in keep]
    return fam


def report(
    meta_params: Any,
    config: MetaLearnerConfig,
    families: Sequence[str] = ("meta_train", "meta_test"),
    seeds: Sequence[int] = (0, 1, 2),
    steps: Optional[int] = None,
    *,
    tasks_per_family: Optional[int] = None,
    source: Optional[Mapping[str, Any]] = None,
    progress: bool = False,
    **compare_kwargs: Any,
) -> dict[str, Any]:
    """:func:`compare` on each task family, plus the transfer score when both
    ``"meta_train"`` and ``"meta_test"`` are among ``families``.

    ``tasks_per_family`` keeps only that many of each family's smallest tasks.
    ``steps`` defaults to the ``"default"`` meta-training preset's ``inner_steps``.
    """
    if steps is None:
        steps = default_steps()
    t0 = time.perf_counter()
    out: dict[str, Any] = {
        "benchmark": "evaluate_meta",
        "source": dict(source or {}),
        "steps": int(steps),
        "seeds": [int(s) for s in seeds],
        "tasks_per_family": tasks_per_family,
        "jax_backend": jax.default_backend(),
        "families": {},
    }
    for fam in families:
        out["families"][fam] = compare(meta_params, config, _family_tasks(fam, tasks_per_family), seeds, int(steps),
                                       progress=progress, **compare_kwargs)
    reference = compare_kwargs.get("reference", TRANSFER_REFERENCE)
    fams = out["families"]
    if "meta_train" in fams and "meta_test" in fams and reference in fams["meta_train"]["config"]["methods"]:
        out["transfer"] = transfer_score(fams["meta_train"], fams["meta_test"], reference=reference)
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out

