"""The evaluation's output: markdown tables and plain JSON of a :func:`~mapa_jax.evaluation.report`.

* :func:`markdown_report`: per family, task x method (final test loss, mean
  ± std over seeds, and the task's test metric, e.g. accuracy or R^2; the lowest in bold), the chosen
  hyperparameters of the registered baselines, the aggregates (mean rank,
  wins, steps to 95%, sparsity, finite runs), the paired comparison and the
  performance; then the architecture transfer score;
* :func:`jsonable`: a result as plain JSON (non-finite floats to None), the
  JSON line that ``mapa evaluate`` prints.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import numpy as np

from mapa_jax.evaluation.baselines import BASELINES
from mapa_jax.evaluation.stats import _finite_or, _test_loss

__all__ = ["markdown_report", "jsonable"]


def _fmt(x: Optional[float], digits: int = 4) -> str:
    if x is None or not math.isfinite(x):
        return "diverged" if x is None or math.isinf(x) else "nan"
    return f"{x:.{digits}g}"


def markdown_report(rep: Mapping[str, Any]) -> str:
    """Markdown tables of a :func:`mapa_jax.evaluation.report`: per family, task x method, then the aggregates."""
    lines = []
    for fam, res in rep["families"].items():
        methods = res["config"]["methods"]
        lines += [f"## {fam}: final test loss (mean ± std over {len(res['config']['seeds'])} seeds) "
                  f"with the test metric named in column `metric` in parentheses, T = {res['config']['steps']}", "",
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
        tuned = [m for m in methods if m in BASELINES and BASELINES[m].grid]  # zero-config: nothing chosen
        if tuned:
            lines += ["", "Chosen hyperparameters (lowest validation loss)", "",
                      "| task | " + " | ".join(f"{m} ({' / '.join(BASELINES[m].grid)})" for m in tuned) + " |",
                      "| --- | " + " | ".join("---" for _ in tuned) + " |"]
            for name, entry in res["tasks"].items():
                lines.append(f"| {name} | " + " | ".join(
                    " / ".join(f"{v:g}" for v in entry["methods"][m]["hparams"].values()) for m in tuned) + " |")
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
        radii = res["config"].get("sharpness_radii") or []
        if radii:
            lines += ["", "PGA sharpness of the final point: the loss's largest increase found within an L2 ball "
                          "of radius r (one training minibatch; mean over tasks and seeds):", "",
                      "| method | " + " | ".join(f"r = {r:g}" for r in radii) + " |",
                      "| --- | " + " | ".join("---" for _ in radii) + " |"]
            for m in methods:
                means = [[e["methods"][m]["sharpness"][r]["mean"] for e in res["tasks"].values()] for r in radii]
                lines.append(f"| {m} | " + " | ".join(_fmt(float(np.mean(v)), 3) for v in means) + " |")
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


def jsonable(x: Any) -> Any:
    """Plain JSON: numpy scalars to Python, non-finite floats to None, tuples to lists."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x
