"""Numbers across tasks, from a :func:`~mapa_jax.evaluation.compare` result (plain dicts: JSON in, JSON out).

* :func:`mean_ranks`, :func:`wins`: per method, by mean final test loss;
* :func:`paired`: per-seed pairs with an exact sign test, and the geometric
  mean over tasks of the loss ratio with a bootstrap interval;
* :func:`performance`, :func:`transfer_score`: MAPA's loss against a tuned
  reference, and how much of it survives on held-out architectures;
* :func:`aggregate`: all of them for one result.

A diverged run (loss None, NaN or inf, as after a JSON round trip) counts as
inf everywhere.

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

import math
from typing import Any, Mapping, Optional

import numpy as np

from mapa_jax.evaluation.baselines import TRANSFER_REFERENCE

__all__ = ["mean_ranks", "wins", "paired", "performance", "TRANSFER_DEFINITION", "transfer_score", "aggregate"]


def _finite_or(value: Any, bad: float) -> float:
    """``value`` as a float when it is finite; ``bad`` for None, NaN and inf."""
    return float(value) if value is not None and math.isfinite(value) else bad


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
    out (listed in ``excluded``); a task where both reach a loss of 0 (the RL
    tasks' floor) gives 1 (a tie). ``value`` is None when no task is left.
    """
    ratios, excluded = [], []
    for task in result["tasks"]:
        ref, mine = _test_loss(result, task, reference), _test_loss(result, task, method)
        if not math.isfinite(ref):
            excluded.append(task)
        elif not math.isfinite(mine):
            ratios.append(0.0)
        elif ref == mine == 0.0:
            ratios.append(1.0)
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
      resamples, seeded). Tasks where either method diverged, or has a mean
      loss of 0 (no log ratio), are left out and counted in ``excluded``. ``geomean_ratio`` is None when no task is left.

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
