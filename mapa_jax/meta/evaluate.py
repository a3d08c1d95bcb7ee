"""Run an optimizer on a task for T steps and measure it (meta-test protocol).

Used by the tests ("the meta-learner beats its random initialization"), by the
benchmarks (MAPA against grid-tuned baselines) and by the CLI's report.
Held-out seeds: evaluation seeds are offset by :data:`EVAL_SEED_OFFSET`, far
from the seeds meta-training draws its trajectories from.

Pieces, smallest first:

* :func:`run`: one optimizer, one task, one seed (one jitted scan);
* :func:`run_seeds`: the same for several seeds at once (one jitted
  ``vmap`` over seeds, compiled once per (optimizer factory, task, T) and
  reused across hyperparameter values, which are traced arguments);
* :func:`compare`: the paper's comparison protocol (Section V): MAPA, its
  random initialization and proximal baselines, each tuned per task on the
  validation loss, reported on the test split (see :data:`BASELINES`);
* :func:`aggregate`, :func:`mean_ranks`, :func:`wins`, :func:`paired`, :func:`performance`,
  :func:`transfer_score`: the numbers across tasks, computed from a
  :func:`compare` result (plain dicts: JSON in, JSON out);
* :func:`report`, :func:`markdown_report`, :func:`main`: the command line
  behind ``mapa evaluate`` and ``benchmarks/evaluate_meta.py``.

Architecture transfer score (paper Section V, "meta-test / meta-train
performance"). The paper does not define "performance" across tasks of
different kinds; we use the loss of a tuned baseline as the unit:

    performance(F) = mean over tasks t in F of  L_ref(t) / L_mapa(t)

with ``L`` the final test loss (mean over seeds) and ``ref`` the grid-tuned
Proximal Adam. ``performance > 1``: MAPA ends lower than tuned Proximal Adam
on average. A task where MAPA diverges counts as ratio 0; a task where the
reference diverges (all grid points) is left out and counted. Then

    transfer = performance(meta_test tasks) / performance(meta_train tasks)

(1: MAPA keeps its edge on held-out architectures; the paper reports 0.92).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mapa_jax.config import MetaLearnerConfig
from mapa_jax.mapa import init_meta_params, mapa
from mapa_jax.tasks.base import SPLITS, Task
from mapa_jax.transforms import prox_adam, prox_rmsprop, proximal_gradient

__all__ = ["EVAL_SEED_OFFSET", "run", "run_seeds", "mapa_factory", "evaluate", "summarize",
           "Baseline", "BASELINES", "DEFAULT_BASELINES", "SPARSITY_THRESHOLD", "TRANSFER_REFERENCE",
           "compare", "select_best", "mean_ranks", "wins", "paired", "performance", "transfer_score", "aggregate",
           "report", "markdown_report", "add_arguments", "main"]

EVAL_SEED_OFFSET = 1_000_003

#: A weight counts as zero for the sparsity ratio when ``|w| <`` this (paper Section V).
SPARSITY_THRESHOLD = 1e-6


def _train(tx: optax.GradientTransformation, task: Task, k_init: jax.Array, k_run: jax.Array,
           steps: int) -> tuple[Any, jax.Array]:
    """``steps`` steps of ``tx`` on ``task`` from ``task.init(k_init)``, in one scan:
    the final params and the minibatch-loss curve (traceable; callers jit it)."""
    params = task.init(k_init)

    def step(carry, k):
        params, state = carry
        loss, grads = jax.value_and_grad(task.loss)(params, task.sample(k))
        updates, state = tx.update(grads, state, params, value=loss)
        return (optax.apply_updates(params, updates), state), loss

    (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(k_run, steps))
    return params, losses


def mapa_factory(meta_params: Any, config: MetaLearnerConfig) -> Callable[[Task], optax.GradientTransformation]:
    """``task -> mapa(meta_params, config, graph=task.graph())``."""
    return lambda task: mapa(meta_params, config, graph=task.graph())


def run(make_tx: Callable[[Task], optax.GradientTransformation], task: Task, seed: int, steps: int) -> dict[str, Any]:
    """Trains ``task`` from the initialization of ``seed`` for ``steps`` steps.

    Returns the minibatch-loss curve, the final metrics on every split, the
    sparsity (fraction of weights with ``|w| < 1e-6``) and the number of steps
    to reach 95% of the final reduction of the training loss.
    """
    tx = make_tx(task)
    key = jax.random.key(EVAL_SEED_OFFSET + seed)
    k_init, k_run = jax.random.split(key)

    @jax.jit
    def train(k_init, k_run):
        return _train(tx, task, k_init, k_run, steps)

    params, losses = train(k_init, k_run)
    losses = np.asarray(losses)
    metrics = {split: {k: float(v) for k, v in task.evaluate(params, split).items()} for split in ("train", "validation", "test")}
    weights = [np.asarray(p) for p in jax.tree.leaves(params) if np.ndim(p) >= 2]
    total = sum(w.size for w in weights)
    sparsity = float(sum(np.sum(np.abs(w) < SPARSITY_THRESHOLD) for w in weights) / total) if total else 0.0
    finite = bool(np.all(np.isfinite(losses)))
    return {
        "task": task.name,
        "seed": seed,
        "losses": losses,
        "metrics": metrics,
        "sparsity": sparsity,
        "finite": finite,
        "steps_to_95": _steps_to_95(losses) if finite else None,
    }


def _steps_to_95(losses: np.ndarray) -> Optional[int]:
    """First step at which the 10-step moving mean of the loss has made 95% of its final reduction."""
    smooth = np.convolve(losses, np.ones(10) / 10, mode="valid") if len(losses) >= 10 else losses
    target = smooth[0] - 0.95 * (smooth[0] - smooth[-1])
    reached = np.nonzero(smooth <= target)[0]
    return int(reached[0]) + 1 if len(reached) else None


def evaluate(
    make_tx: Callable[[Task], optax.GradientTransformation],
    tasks: Sequence[Task],
    seeds: Sequence[int],
    steps: int,
) -> dict[str, list[dict[str, Any]]]:
    """:func:`run` for every task and seed: ``{task name: [result per seed]}``."""
    return {t.name: [run(make_tx, t, s, steps) for s in seeds] for t in tasks}


def summarize(results: Mapping[str, list[dict[str, Any]]], split: str = "test", metric: str = "loss") -> dict[str, float]:
    """Mean of ``metrics[split][metric]`` over seeds, per task (NaN-safe: inf for failures)."""
    out = {}
    for name, runs in results.items():
        vals = [r["metrics"][split].get(metric, np.nan) for r in runs]
        vals = [v if np.isfinite(v) else np.inf for v in vals]
        out[name] = float(np.mean(vals))
    return out


# --------------------------------------------------------------------------
# Several seeds at once.


@dataclasses.dataclass(frozen=True)
class _Fixed:
    """``(task, hparams) -> tx`` from a ``task -> tx`` factory (no hyperparameters)."""

    make_tx: Callable[[Task], optax.GradientTransformation]

    def __call__(self, task: Task, hparams: Any) -> optax.GradientTransformation:
        del hparams
        return self.make_tx(task)


@functools.lru_cache(maxsize=128)
def _seeds_runner(make_tx: Callable[[Task, Any], optax.GradientTransformation], task: Task, steps: int) -> Callable:
    """``jit(vmap over seeds)`` of one trajectory; ``hparams`` is a traced (shared) argument.

    Cached on ``(make_tx, task, steps)``: every value of the hyperparameters and
    every set of seeds of one size reuses one compiled program.
    """

    def one(hparams: Any, seed: jax.Array):
        tx = make_tx(task, hparams)
        k_init, k_run = jax.random.split(jax.random.key(seed))
        params, losses = _train(tx, task, k_init, k_run, steps)
        metrics = {split: dict(task.evaluate(params, split)) for split in SPLITS}
        weights = [p for p in jax.tree.leaves(params) if jnp.ndim(p) >= 2]
        zeros = sum((jnp.sum(jnp.abs(w) < SPARSITY_THRESHOLD) for w in weights), jnp.int32(0))
        return losses, metrics, zeros

    return jax.jit(jax.vmap(one, in_axes=(None, 0)))


def run_seeds(
    make_tx: Callable[..., optax.GradientTransformation],
    task: Task,
    seeds: Sequence[int],
    steps: int,
    hparams: Any = None,
) -> list[dict[str, Any]]:
    """:func:`run` for several seeds in one ``jit(vmap)``: a list of :func:`run`'s results.

    Args:
      make_tx: ``task -> tx`` (as for :func:`run`) when ``hparams`` is None;
        otherwise ``(task, hparams) -> tx``, with ``hparams`` a pytree of arrays
        (learning rates, meta-params, ...) passed traced, so that one compiled
        program serves every value. Keep ``make_tx`` the same object across
        calls (a module-level function, not a new lambda) to reuse it.
      task, seeds, steps: as for :func:`run` (same keys, same results up to
        float rounding).
      hparams: the hyperparameters given to ``make_tx``, or None.
    """
    if not seeds:
        raise ValueError("run_seeds: seeds is empty.")
    factory = _Fixed(make_tx) if hparams is None else make_tx
    offsets = np.asarray([EVAL_SEED_OFFSET + int(s) for s in seeds], np.int32)
    losses, metrics, zeros = jax.device_get(_seeds_runner(factory, task, int(steps))(hparams, offsets))
    total = sum(
        int(np.prod(p.shape)) for p in jax.tree.leaves(jax.eval_shape(task.init, jax.random.key(0))) if len(p.shape) >= 2
    )
    out = []
    for i, seed in enumerate(seeds):
        curve = np.asarray(losses[i])
        finite = bool(np.all(np.isfinite(curve)))
        out.append({
            "task": task.name,
            "seed": seed,
            "losses": curve,
            "metrics": {split: {k: float(v[i]) for k, v in metrics[split].items()} for split in SPLITS},
            "sparsity": float(zeros[i]) / total if total else 0.0,
            "finite": finite,
            "steps_to_95": _steps_to_95(curve) if finite else None,
        })
    return out


# --------------------------------------------------------------------------
# The comparison protocol.


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A fixed-hyperparameter optimizer and the grid it is tuned over.

    Attributes:
      make: ``(**hparams) -> optax transform``; hyperparameters arrive traced.
      grid: ``{name: values}``; every combination is run, and the one with the
        lowest validation loss (mean over seeds) is reported on the test split.
        A single combination means "untuned".
      description: one line for reports.
    """

    make: Callable[..., optax.GradientTransformation]
    grid: Mapping[str, Sequence[float]]
    description: str = ""


def _prox_adam(learning_rate, l1):
    return prox_adam(learning_rate, l1=l1)


def _pgd(learning_rate, l1):
    return proximal_gradient(learning_rate, l1=l1)


def _prox_rmsprop(learning_rate, l1):
    return prox_rmsprop(learning_rate, l1=l1)


#: The fixed-hyperparameter baselines of :func:`compare` (paper Section V).
#: PGD: the paper's reg grid {1e-3, 1e-4, 1e-5}; its lr grid {1e-2, 1e-3, 1e-4}
#: is moved up a decade to {1e-1, 1e-2, 1e-3}, since plain gradient steps of
#: 1e-4 barely move these small networks in a few hundred steps while 1e-1
#: is often best. Proximal Adam: lr {1e-2, 3e-3, 1e-3} x l1 {1e-4, 1e-5} (the
#: PGD reg values; the paper gives no grid for it). Proximal RMSProp: the
#: paper's "default hyperparameters", lr 1e-3, l1 1e-5, untuned. The prox
#: applies to weight tensors (ndim >= 2), as MAPA's does.
BASELINES: dict[str, Baseline] = {
    "prox_adam": Baseline(_prox_adam, {"learning_rate": (1e-2, 3e-3, 1e-3), "l1": (1e-4, 1e-5)},
                          "Proximal Adam, grid-tuned per task on validation loss"),
    "pgd": Baseline(_pgd, {"learning_rate": (1e-1, 1e-2, 1e-3), "l1": (1e-3, 1e-4, 1e-5)},
                    "proximal gradient descent, grid-tuned per task on validation loss"),
    "prox_rmsprop": Baseline(_prox_rmsprop, {"learning_rate": (1e-3,), "l1": (1e-5,)},
                             "Proximal RMSProp, default hyperparameters (untuned)"),
}

#: What :func:`compare` runs besides ``"mapa"`` unless told otherwise.
DEFAULT_BASELINES = ("mapa_random_init", "prox_adam", "pgd", "prox_rmsprop")

#: The baseline whose loss is the unit of :func:`performance` and :func:`transfer_score`.
TRANSFER_REFERENCE = "prox_adam"


@dataclasses.dataclass(frozen=True)
class _BaselineTx:
    make: Callable[..., optax.GradientTransformation]

    def __call__(self, task: Task, hparams: Mapping[str, Any]) -> optax.GradientTransformation:
        del task
        return self.make(**hparams)


@dataclasses.dataclass(frozen=True)
class _MapaTx:
    config: MetaLearnerConfig

    def __call__(self, task: Task, meta_params: Any) -> optax.GradientTransformation:
        return mapa(meta_params, self.config, graph=task.graph())


def _grid_points(grid: Mapping[str, Sequence[float]]) -> list[dict[str, float]]:
    names = list(grid)
    points = [{}]
    for name in names:
        points = [{**p, name: float(v)} for p in points for v in grid[name]]
    return points


def _finite_or(value: Any, bad: float) -> float:
    return float(value) if value is not None and math.isfinite(value) else bad


def _mean_over_seeds(runs: Sequence[Mapping[str, Any]], split: str, metric: str = "loss") -> float:
    """Mean over seeds; a non-finite value makes it inf (as :func:`summarize`)."""
    return float(np.mean([_finite_or(r["metrics"][split].get(metric), np.inf) for r in runs]))


def select_best(candidates: Sequence[Sequence[Mapping[str, Any]]], split: str = "validation") -> int:
    """Index of the candidate (a list of per-seed :func:`run` results) with the lowest mean ``split`` loss.

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
             "steps_to_95": r["steps_to_95"], "sparsity": r["sparsity"], "finite": r["finite"]}
            for r in runs
        ],
    }
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
) -> dict[str, Any]:
    """MAPA against baselines on held-out seeds: the paper's comparison protocol.

    Per task, every method trains from the same initializations (seeds offset
    by :data:`EVAL_SEED_OFFSET`) for ``steps`` steps on the same minibatches:

    * ``"mapa"``: ``mapa(meta_params, config, graph=task.graph())``;
    * ``"mapa_random_init"``: the same config at ``random_meta_params``
      (default ``init_meta_params(jax.random.key(0), config)``);
    * the baselines of :data:`BASELINES` (``"prox_adam"``, ``"pgd"``,
      ``"prox_rmsprop"``): every point of the grid is run on every seed; the
      point with the lowest mean *validation* loss is chosen per task and its
      *test* numbers are reported. (Deterministic synthetic tasks have one
      objective for every split, so there selection and report coincide.)

    Args:
      meta_params, config: the meta-learner under test.
      tasks: the tasks.
      seeds: evaluation seeds (see :data:`EVAL_SEED_OFFSET`).
      steps: T, the inner steps per run.
      baselines: which of ``"mapa_random_init"`` and :data:`BASELINES` to run.
      grid: per-baseline grid overrides, e.g. ``{"pgd": {"learning_rate":
        (0.1,), "l1": (1e-4,)}}``; a baseline's hyperparameter names must match.
      random_meta_params: the random initialization to compare with.
      reference: the baseline of :func:`performance` in the aggregates.
      progress: a tqdm progress bar (one tick per method and grid point).

    Returns:
      ``{"config": ..., "tasks": {name: {"kind", "num_params", "metric",
      "methods": {method: summary}}}, "aggregates": aggregate(...)}``, where a
      method's summary holds mean/std over seeds of the final test loss
      (``test_loss``), validation and train loss, ``test_metric`` (accuracy,
      R^2 or suboptimality, named by the task's ``metric``), ``steps_to_95``
      (mean/std over the seeds that reached it, and how many did),
      ``sparsity`` (fraction of weight-tensor entries with ``|w| < 1e-6``),
      ``finite_fraction`` (seeds whose loss curve stayed finite), the
      per-seed values, ``wall_s`` (compile and run) and, for tuned
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
    known = ("mapa_random_init", *BASELINES)
    unknown = [b for b in baselines if b not in known]
    if unknown:
        raise ValueError(f"compare: unknown baselines {unknown}; known: {list(known)}.")
    grids = {name: dict(BASELINES[name].grid) for name in baselines if name in BASELINES}
    for name, g in (grid or {}).items():
        if name not in grids:
            raise ValueError(f"compare: grid given for {name!r}, which is not among the baselines run {list(grids)}.")
        if set(g) != set(BASELINES[name].grid) or any(len(v) == 0 for v in g.values()):
            raise ValueError(
                f"compare: grid[{name!r}] must give non-empty values for exactly {sorted(BASELINES[name].grid)}, "
                f"got {dict(g)}."
            )
        grids[name] = {k: tuple(float(x) for x in g[k]) for k in BASELINES[name].grid}
    if "mapa_random_init" in baselines and random_meta_params is None:
        random_meta_params = init_meta_params(jax.random.key(0), config)

    units = len(tasks) * (1 + ("mapa_random_init" in baselines) + sum(len(_grid_points(g)) for g in grids.values()))
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
        if "mapa_random_init" in baselines:
            mapa_runs.append(("mapa_random_init", random_meta_params))
        for name, mp in mapa_runs:
            t0 = time.perf_counter()
            runs = run_seeds(_MapaTx(config), task, seeds, steps, hparams=mp)
            metric = metric or _metric_name(runs)
            methods[name] = {**_summary(runs, metric), "hparams": None,
                             "wall_s": round(time.perf_counter() - t0, 3)}
            tick(f"{task.name} {name}")
        for name in baselines:
            if name not in BASELINES:
                continue
            t0 = time.perf_counter()
            points = _grid_points(grids[name])
            factory = _BaselineTx(BASELINES[name].make)
            candidates = []
            for hp in points:
                candidates.append(run_seeds(factory, task, seeds, steps,
                                            hparams={k: np.float32(v) for k, v in hp.items()}))
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
                   "meta_learner": config.to_dict(), "sparsity_threshold": SPARSITY_THRESHOLD},
        "tasks": out_tasks,
    }
    result["aggregates"] = aggregate(result, reference=reference if reference in baselines else None)
    return result


# --------------------------------------------------------------------------
# Numbers across tasks (from a compare result; JSON round trips are fine).


def _test_loss(result: Mapping[str, Any], task: str, method: str) -> float:
    """Mean test loss of ``method`` on ``task``; None/NaN/inf (diverged) -> inf."""
    return _finite_or(result["tasks"][task]["methods"][method]["test_loss"]["mean"], math.inf)


def _methods(result: Mapping[str, Any]) -> list[str]:
    names = None
    for entry in result["tasks"].values():
        ms = list(entry["methods"])
        names = ms if names is None else [m for m in names if m in ms]
    return names or []


def mean_ranks(result: Mapping[str, Any]) -> dict[str, float]:
    """Per method, its rank by mean test loss (1 = lowest) averaged over tasks; ties share the mean rank."""
    methods = _methods(result)
    totals = dict.fromkeys(methods, 0.0)
    for task in result["tasks"]:
        losses = np.asarray([_test_loss(result, task, m) for m in methods])
        for i, m in enumerate(methods):
            below = np.sum(losses < losses[i])
            equal = np.sum(losses == losses[i])
            totals[m] += below + (equal + 1) / 2.0
    n = len(result["tasks"])
    return {m: float(totals[m] / n) for m in methods} if n else {}


def wins(result: Mapping[str, Any], method: str = "mapa") -> dict[str, dict[str, int]]:
    """Per other method: on how many tasks ``method``'s mean test loss is strictly lower.

    A diverged run counts as inf: a finite loss beats it, two diverged runs tie.
    """
    out = {}
    for other in _methods(result):
        if other == method:
            continue
        won = sum(_test_loss(result, t, method) < _test_loss(result, t, other) for t in result["tasks"])
        lost = sum(_test_loss(result, t, method) > _test_loss(result, t, other) for t in result["tasks"])
        out[other] = {"wins": int(won), "losses": int(lost), "tasks": len(result["tasks"])}
    return out


def performance(result: Mapping[str, Any], method: str = "mapa", reference: str = TRANSFER_REFERENCE) -> dict[str, Any]:
    """Mean over tasks of ``L_reference / L_method`` (final test loss, mean over seeds).

    > 1: ``method`` ends lower than ``reference`` on average. A task where
    ``method`` diverges gives 0; a task where ``reference`` diverges is left
    out (listed in ``excluded``). ``value`` is None when no task is left.
    """
    ratios, excluded = [], []
    for task in result["tasks"]:
        ref, mine = _test_loss(result, task, reference), _test_loss(result, task, method)
        if not math.isfinite(ref):
            excluded.append(task)
        elif not math.isfinite(mine):
            ratios.append(0.0)
        else:
            ratios.append(ref / max(mine, 1e-12))
    return {"value": float(np.mean(ratios)) if ratios else None, "tasks": len(ratios), "excluded": excluded,
            "method": method, "reference": reference}


def _sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact sign test (ties dropped): the probability, if either
    side were equally likely to win each pair, of a split at least this uneven."""
    n, k = wins + losses, min(wins, losses)
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n)


def paired(result: Mapping[str, Any], method: str = "mapa", other: str = TRANSFER_REFERENCE, *,
           resamples: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """How sure is ``method`` vs ``other``? Two measures that account for noise.

    * Per seed: the runs of both methods on one task and seed share the
      initialization and minibatch keys, so they form a pair. ``wins`` /
      ``losses`` count pairs whose final test loss is lower / higher for
      ``method`` (diverged = inf; ties dropped), with the exact two-sided sign
      test's ``sign_test_p`` (small: the split is unlikely under "equally good").
    * Across tasks: ``geomean_ratio``, the geometric mean over tasks of
      ``L_other / L_method`` (mean test loss over seeds; > 1: ``method`` lower),
      and ``ci95``, its 95% bootstrap interval over tasks (``resamples``
      resamples, seeded). Tasks where either method diverged are left out and
      counted in ``excluded``. ``geomean_ratio`` is None when no task is left.

    Results without per-seed records (``per_seed``) give 0 pairs.
    """
    known = _methods(result)
    for name in (method, other):
        if name not in known:
            raise ValueError(f"paired: no method {name!r} in every task of the result; methods: {known}.")
    wins = losses = ties = 0
    logs, excluded = [], 0
    for task in result["tasks"]:
        methods = result["tasks"][task]["methods"]
        mine = {r["seed"]: _finite_or(r["test_loss"], math.inf) for r in methods[method].get("per_seed", [])}
        for r in methods[other].get("per_seed", []):
            if r["seed"] in mine:
                a, b = mine[r["seed"]], _finite_or(r["test_loss"], math.inf)
                wins += a < b
                losses += a > b
                ties += a == b
        a, b = _test_loss(result, task, method), _test_loss(result, task, other)
        if math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0:
            logs.append(math.log(b / a))
        else:
            excluded += 1
    out: dict[str, Any] = {"method": method, "other": other, "wins": int(wins), "losses": int(losses),
                           "ties": int(ties), "sign_test_p": _sign_test_p(wins, losses),
                           "tasks": len(logs), "excluded": excluded, "geomean_ratio": None, "ci95": None}
    if logs:
        x = np.asarray(logs)
        rng = np.random.default_rng(seed)
        boot = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        out["geomean_ratio"] = float(np.exp(x.mean()))
        out["ci95"] = [float(np.exp(lo)), float(np.exp(hi))]
    return out


TRANSFER_DEFINITION = (
    "performance(F) = mean over tasks in F of L_ref / L_mapa (final test loss, mean over seeds; "
    "ref = grid-tuned prox_adam; mapa diverged -> 0; ref diverged -> task left out); "
    "transfer = performance(meta_test) / performance(meta_train)"
)


def transfer_score(train_result: Mapping[str, Any], test_result: Mapping[str, Any], method: str = "mapa",
                   reference: str = TRANSFER_REFERENCE) -> dict[str, Any]:
    """Architecture transfer score: ``performance(meta-test) / performance(meta-train)``.

    See :func:`performance` and the module docstring. ``score`` is None when
    either performance is undefined or the meta-train one is 0.
    """
    p_train = performance(train_result, method, reference)
    p_test = performance(test_result, method, reference)
    a, b = p_test["value"], p_train["value"]
    return {"score": a / b if a is not None and b else None, "meta_train_performance": p_train,
            "meta_test_performance": p_test, "definition": TRANSFER_DEFINITION}


def aggregate(result: Mapping[str, Any], method: str = "mapa", reference: Optional[str] = TRANSFER_REFERENCE) -> dict[str, Any]:
    """Mean ranks, wins of ``method`` against each other method (by mean and,
    with :func:`paired`, per seed with a sign test and a bootstrap interval)
    and its :func:`performance` vs ``reference``."""
    out = {"mean_rank": mean_ranks(result), "wins": wins(result, method),
           "paired": {m: paired(result, method, m) for m in _methods(result) if m != method}}
    if reference is not None and reference in _methods(result):
        out["performance"] = performance(result, method, reference)
    return out


# --------------------------------------------------------------------------
# The report behind `mapa evaluate` and benchmarks/evaluate_meta.py.

#: ``--quick``: one seed, the two smallest tasks of each family, T = 50.
QUICK = {"seeds": 1, "tasks_per_family": 2, "steps": 50}


def _default_steps() -> int:
    """T of the shipped meta-learner's training: the ``"default"`` preset's ``inner_steps``."""
    from mapa_jax.meta.train import PRESETS  # local: train needs the 'train' extra

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
        steps = _default_steps()
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
    if "meta_train" in out["families"] and "meta_test" in out["families"]:
        out["transfer"] = transfer_score(out["families"]["meta_train"], out["families"]["meta_test"])
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def _fmt(x: Optional[float], digits: int = 4) -> str:
    if x is None or not math.isfinite(x):
        return "diverged" if x is None or math.isinf(x) else "nan"
    return f"{x:.{digits}g}"


def markdown_report(rep: Mapping[str, Any]) -> str:
    """Markdown tables of a :func:`report`: per family, task x method, then the aggregates."""
    lines = []
    for fam, res in rep["families"].items():
        methods = res["config"]["methods"]
        lines += [f"## {fam}: final test loss (mean ± std over {len(res['config']['seeds'])} seeds) "
                  f"and accuracy / R^2, T = {res['config']['steps']}", "",
                  "| task | metric | " + " | ".join(methods) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in methods) + " |"]
        for name, entry in res["tasks"].items():
            best = min(methods, key=lambda m: _test_loss(res, name, m))
            cells = []
            for m in methods:
                s = entry["methods"][m]
                if not math.isfinite(_finite_or(s["test_loss"]["mean"], math.inf)):
                    cells.append(f"diverged ({s['finite_fraction']:.0%} of seeds finite)")
                    continue
                cell = f"{_fmt(s['test_loss']['mean'])} ± {_fmt(s['test_loss']['std'], 2)}"
                if s["test_metric"] is not None:
                    cell += f" ({_fmt(s['test_metric']['mean'], 3)})"
                cells.append(f"**{cell}**" if m == best else cell)
            lines.append(f"| {name} | {entry['metric']} | " + " | ".join(cells) + " |")
        tuned = [m for m in methods if m in BASELINES]
        if tuned:
            lines += ["", "Chosen hyperparameters (lowest validation loss): learning rate / l1", "",
                      "| task | " + " | ".join(tuned) + " |", "| --- | " + " | ".join("---" for _ in tuned) + " |"]
            for name, entry in res["tasks"].items():
                lines.append(f"| {name} | " + " | ".join(
                    f"{entry['methods'][m]['hparams']['learning_rate']:g} / {entry['methods'][m]['hparams']['l1']:g}"
                    for m in tuned) + " |")
        agg = res["aggregates"]
        lines += ["", f"### {fam}: aggregates over {len(res['tasks'])} tasks", "",
                  "| method | mean rank | mapa wins / losses vs it | steps to 95% (mean) | sparsity (mean) "
                  "| finite runs |", "| --- | --- | --- | --- | --- | --- |"]
        for m in methods:
            w = agg["wins"].get(m)
            steps95 = [e["methods"][m]["steps_to_95"]["mean"] for e in res["tasks"].values()]
            steps95 = [s for s in steps95 if s is not None]
            sparsity = [e["methods"][m]["sparsity"]["mean"] for e in res["tasks"].values()]
            finite = np.mean([e["methods"][m]["finite_fraction"] for e in res["tasks"].values()])
            record = f"{w['wins']} / {w['losses']} of {w['tasks']}" if w else "-"
            lines.append(
                f"| {m} | {agg['mean_rank'][m]:.2f} | {record} "
                f"| {f'{np.mean(steps95):.3g}' if steps95 else 'not reached'} "
                f"| {_fmt(float(np.nanmean(sparsity)) if sparsity else None, 3)} | {finite:.0%} |")
        if agg.get("paired"):
            lines += ["", "Is the difference larger than the noise? Per-seed pairs (same initialization and "
                          "minibatches) with an exact sign test, and the geometric mean over tasks of "
                          "L_other / L_mapa (> 1: mapa lower) with its 95% bootstrap interval over tasks:", "",
                      "| vs | mapa wins / losses (seed pairs) | sign test p | geometric-mean ratio [95% CI] |",
                      "| --- | --- | --- | --- |"]
            for m, pr in agg["paired"].items():
                ci = f" [{pr['ci95'][0]:.3f}, {pr['ci95'][1]:.3f}]" if pr["ci95"] else ""
                lines.append(f"| {m} | {pr['wins']} / {pr['losses']} of {pr['wins'] + pr['losses'] + pr['ties']} "
                             f"| {pr['sign_test_p']:.3g} | {_fmt(pr['geomean_ratio'], 3)}{ci} |")
        if "performance" in agg:
            p = agg["performance"]
            lines += ["", f"Performance vs {p['reference']} (mean over tasks of L_{p['reference']} / L_mapa): "
                          f"{_fmt(p['value'], 3)} over {p['tasks']} tasks"
                          + (f" ({len(p['excluded'])} left out: reference diverged)" if p["excluded"] else "")]
        lines.append("")
    if "transfer" in rep:
        tr = rep["transfer"]
        lines += ["## Architecture transfer score", "",
                  f"transfer = {_fmt(tr['score'], 3)} (meta-test performance "
                  f"{_fmt(tr['meta_test_performance']['value'], 3)} / meta-train performance "
                  f"{_fmt(tr['meta_train_performance']['value'], 3)}; paper: 0.92)", "",
                  f"Definition: {tr['definition']}.", ""]
    return "\n".join(lines)


def _jsonable(x: Any) -> Any:
    """Plain JSON: numpy scalars to Python, non-finite floats to None, tuples to lists."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by ``mapa evaluate`` and ``benchmarks/evaluate_meta.py``."""
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--checkpoint-dir", default=None, help="a meta-training checkpoint directory")
    src.add_argument("--pretrained", default=None,
                     help="a shipped meta-learner (default: 'default' when it is shipped)")
    parser.add_argument("--pretrained-dir", default=None,
                        help="where to look for --pretrained NAME (default: the package's pretrained/ folder)")
    parser.add_argument("--families", default="meta_train,meta_test",
                        help="comma-separated task families (meta_train, meta_test, synthetic, smoke)")
    parser.add_argument("--seeds", type=int, default=None, help="evaluation seeds (default 3; --quick: 1)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="evaluate seeds FIRST .. FIRST+SEEDS-1 (default 0), e.g. seeds not used to choose a config")
    parser.add_argument("--steps", type=int, default=None,
                        help="inner steps T (default: the default preset's inner_steps; --quick: 50)")
    parser.add_argument("--quick", action="store_true",
                        help="1 seed, the 2 smallest tasks per family, T = 50 (about a minute)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


class _SourceError(Exception):
    pass


def _load(args: argparse.Namespace) -> tuple[Any, MetaLearnerConfig, dict]:
    from mapa_jax import pretrained

    if args.checkpoint_dir is not None:
        from mapa_jax.meta.checkpoint import load_meta_params, read_meta

        meta_params, config = load_meta_params(args.checkpoint_dir)
        meta = read_meta(args.checkpoint_dir)  # the run's configuration and seed: its own random init
        provenance = {"train_config": meta["train_config"], "seed": meta["seed"], "meta_steps_run": meta["step"]}
        return meta_params, config, {"checkpoint_dir": os.path.abspath(args.checkpoint_dir), "provenance": provenance}
    name = args.pretrained if args.pretrained is not None else pretrained.DEFAULT
    directory = args.pretrained_dir or pretrained.PRETRAINED_DIR
    if args.pretrained is None and not os.path.exists(os.path.join(directory, f"{name}.msgpack")):
        raise _SourceError(
            f"no pretrained meta-learner {name!r} is shipped (looked for "
            f"{os.path.join(directory, name + '.msgpack')}). Meta-train one with "
            "`mapa meta-train --preset default --checkpoint-dir runs/default` (at most an hour on a "
            "2-core CPU; `--preset smoke` takes a minute) and evaluate it with "
            "`--checkpoint-dir runs/default`, or name another one with --pretrained NAME "
            f"[--pretrained-dir DIR] (shipped: {pretrained.available() or 'none'})."
        )
    meta_params, config, info = pretrained.load_pretrained(name, directory=args.pretrained_dir, with_info=True)
    provenance = {k: v for k, v in info.items() if k != "meta_learner"}  # the config is in each result
    return meta_params, config, {"pretrained": name, "directory": os.path.abspath(directory), "provenance": provenance}


def _run_initialization(source: Mapping[str, Any], config: MetaLearnerConfig) -> Any:
    """The meta-params the meta-training run started from, when the provenance
    names its configuration and seed (so "random init" is the run's own start);
    None otherwise (then :func:`compare` uses ``init_meta_params(key(0))``)."""
    prov = source.get("provenance", {})
    if "train_config" not in prov or "seed" not in prov:
        return None
    from mapa_jax.meta.train import MetaTrainConfig, initial_meta_params

    train_cfg = MetaTrainConfig.from_dict(prov["train_config"])
    if train_cfg.meta_learner != config:
        return None
    return initial_meta_params(train_cfg, int(prov["seed"]))


def run_from_args(args: argparse.Namespace, prog: str = "evaluate") -> int:
    """Runs the evaluation an :func:`add_arguments` parser describes; prints tables and a JSON line."""
    from mapa_jax import tasks as tasks_lib

    families = [f.strip() for f in args.families.split(",") if f.strip()]
    bad = [f for f in families if f not in tasks_lib.family_names()]
    if bad or not families:
        print(f"{prog}: unknown task families {bad or families}; known: {tasks_lib.family_names()}", file=sys.stderr)
        return 2
    n_seeds = args.seeds if args.seeds is not None else (QUICK["seeds"] if args.quick else 3)
    if args.steps is not None:
        steps = args.steps
    elif args.quick:
        steps = QUICK["steps"]
    else:
        steps = _default_steps()
    if n_seeds < 1 or steps < 1:
        print(f"{prog}: --seeds and --steps must be >= 1, got {n_seeds} and {steps}", file=sys.stderr)
        return 2
    if args.first_seed < 0:
        print(f"{prog}: --first-seed must be >= 0, got {args.first_seed}", file=sys.stderr)
        return 2
    try:
        meta_params, config, source = _load(args)
    except _SourceError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:  # CheckpointError is a ValueError
        print(f"{prog}: cannot load the meta-learner: {e}", file=sys.stderr)
        return 2
    rep = report(meta_params, config, families, list(range(args.first_seed, args.first_seed + n_seeds)), steps,
                 tasks_per_family=QUICK["tasks_per_family"] if args.quick else None,
                 source=source, progress=not args.no_progress and not args.json,
                 random_meta_params=_run_initialization(source, config))
    rep["quick"] = bool(args.quick)
    if not args.json:
        print(markdown_report(rep))
    print(json.dumps(_jsonable(rep)))
    return 0


def main(argv: Optional[Sequence[str]] = None, prog: str = "evaluate_meta") -> int:
    """``python benchmarks/evaluate_meta.py``: see :func:`add_arguments`."""
    parser = argparse.ArgumentParser(prog=prog, description="MAPA against tuned proximal baselines on held-out seeds")
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv), prog)
