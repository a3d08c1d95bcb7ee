"""The ``mapa`` command line.

    mapa demo [--out demo.png] [--steps N] [--no-progress]
    mapa meta-train --preset {smoke,default,distance,distance_wide,distance_held,distance_horizon} --checkpoint-dir DIR
                    [--seed N] [--resume] [--devices N]
    mapa evaluate [--checkpoint-dir DIR | --pretrained NAME] [--families meta_train,meta_test]
                  [--seeds N] [--first-seed S] [--steps T | --long-horizon] [--quick] [--sharpness] [--json]

``mapa demo`` trains a small Flax CNN on scikit-learn's digits with the
shipped MAPA, ``optax.adam(1e-3)`` and ``optax.contrib.prodigy()``, prints a
table and writes a figure (:func:`mapa_jax.demo.run_demo`; about a minute on
a 2-core CPU).

``mapa evaluate`` runs a meta-learner (default: the shipped one) against the
registered baselines on held-out seeds and prints markdown tables and a JSON
line (:func:`evaluate`, which ``benchmarks/evaluate_meta.py`` also runs; the
protocol is :mod:`mapa_jax.evaluation`).

``--devices N`` on a CPU-only machine simulates N CPU devices (set before
JAX's backend starts).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Mapping, Optional, Sequence


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mapa", description="mapa_jax: meta-learned adaptive proximal optimization")
    sub = ap.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="MAPA, Adam and Prodigy on a small CNN: a table and demo.png (about a minute)")
    demo.add_argument("--out", default="demo.png", help="the figure's path (.png; default demo.png)")
    demo.add_argument("--steps", type=int, default=None, help="training steps per optimizer (default 400)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    mt = sub.add_parser("meta-train", help="meta-train a MAPA meta-learner")
    mt.add_argument("--preset", default="default", help="smoke (about a minute), default (the shipped one), distance (the default on Prodigy's "
                         "distance estimate), distance_wide (distance on meta_train_wide, T up to 400, "
                         "augmented) or distance_held (distance_wide with d held after step 100 and the "
                         "learned factor only after it) or distance_horizon (distance_held told each "
                         "trajectory's length, mapa(total_steps=T))")
    mt.add_argument("--checkpoint-dir", required=True, help="directory for checkpoints, metrics.jsonl and the plot")
    mt.add_argument("--seed", type=int, default=0)
    mt.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the directory")
    mt.add_argument("--devices", type=int, default=None,
                    help="devices of the mesh (on CPU: simulated CPU devices); default: as many as divide the meta-batch")
    mt.add_argument("--meta-steps", type=int, default=None, help="override the preset's number of meta-steps")
    mt.add_argument("--no-progress", action="store_true", help="no progress bar")
    ex = sub.add_parser("export", help="write a checkpoint's meta-learner as NAME.msgpack + NAME.json (pretrained format)")
    ex.add_argument("--checkpoint-dir", required=True)
    ex.add_argument("--name", default="default")
    ex.add_argument("--out-dir", default=None, help="default: the package's pretrained/ folder")
    ev = sub.add_parser("evaluate", help="evaluate a meta-learner against tuned proximal baselines")
    add_evaluate_arguments(ev)
    return ap


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mapa evaluate`` (and ``benchmarks/evaluate_meta.py``)."""
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--checkpoint-dir", default=None, help="a meta-training checkpoint directory")
    src.add_argument("--pretrained", default=None,
                     help="a shipped meta-learner (default: 'default' when it is shipped)")
    parser.add_argument("--pretrained-dir", default=None,
                        help="where to look for --pretrained NAME (default: the package's pretrained/ folder)")
    parser.add_argument("--families", default="meta_train,meta_test",
                        help="comma-separated task families (meta_train, meta_test, synthetic, smoke, sequence, rl)")
    parser.add_argument("--baselines", default=None,
                        help="comma-separated methods besides mapa (default: all of mapa_jax.evaluation.DEFAULT_BASELINES)")
    parser.add_argument("--seeds", type=int, default=None, help="evaluation seeds (default 3; --quick: 1)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="evaluate seeds FIRST .. FIRST+SEEDS-1 (default 0), e.g. seeds not used to choose a config")
    parser.add_argument("--steps", type=int, default=None,
                        help="inner steps T (default: the default preset's inner_steps; --quick: 50)")
    parser.add_argument("--long-horizon", action="store_true",
                        help="T = 5x the default preset's inner_steps (the long-horizon setting)")
    parser.add_argument("--quick", action="store_true",
                        help="1 seed, the 2 smallest tasks per family, T = 50 (a few minutes)")
    parser.add_argument("--sharpness", action="store_true",
                        help="also measure each run's PGA sharpness at radii 0.001, 0.005, 0.05, 0.1 "
                             "(about 80 more gradient evaluations per run)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


class _SourceError(Exception):
    pass


def _load_learner(args: argparse.Namespace) -> tuple[Any, Any, dict]:
    """The meta-learner ``--checkpoint-dir`` / ``--pretrained`` names: (meta_params, config, source)."""
    from mapa_jax import pretrained

    if args.checkpoint_dir is not None:
        from mapa_jax.meta.checkpoint import load_meta_params, read_meta

        meta_params, config = load_meta_params(args.checkpoint_dir)
        meta = read_meta(args.checkpoint_dir)  # the run's configuration and seed: its own random init
        # What the metadata has (a hand-made checkpoint may lack some): without train_config and
        # seed, run_initialization falls back to the default random init.
        provenance = {k: meta[k] for k in ("train_config", "seed") if k in meta}
        provenance["meta_steps_run"] = meta.get("step")
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


def run_initialization(source: Mapping[str, Any], config: Any) -> Any:
    """The meta-params the meta-training run started from, when the provenance
    names its configuration and seed (so "random init" is the run's own start);
    None otherwise (then :func:`mapa_jax.evaluation.compare` uses ``init_meta_params(key(0))``)."""
    prov = source.get("provenance", {})
    if "train_config" not in prov or "seed" not in prov:
        return None
    from mapa_jax.meta.config import MetaTrainConfig
    from mapa_jax.meta.train import initial_meta_params

    train_cfg = MetaTrainConfig.from_dict(prov["train_config"])
    if train_cfg.meta_learner != config:
        return None
    return initial_meta_params(train_cfg, int(prov["seed"]))


#: Calibration of :func:`expected_seconds` (2-core CPU, JAX 0.10, shared with other work):
#: seconds to compile one (task, optimizer) program, and per step of one run of one seed.
#: Measured with ``mapa evaluate --quick`` (4 tasks, 1 seed, T = 50: 173 s) and
#: ``mapa evaluate --families meta_test`` (5 tasks, 3 seeds, T = 200).
SECONDS_PER_PROGRAM = 4.0
SECONDS_PER_RUN_STEP = 2.5e-3
#: Imports, data and the meta-learner, once.
SECONDS_FIXED = 10.0


def evaluation_size(baselines: Optional[Sequence[str]] = None) -> tuple[int, int, int]:
    """Per task: ``(methods, programs, runs)`` of :func:`mapa_jax.evaluation.compare` with ``baselines``
    (default: its defaults). A method tuned over a grid of ``k`` points is one program
    (hyperparameters are traced) and ``k`` runs; MAPA and its random init share a program."""
    from mapa_jax import evaluation

    baselines = evaluation.DEFAULT_BASELINES if baselines is None else tuple(baselines)
    runs = 1 + (evaluation.MAPA_RANDOM_INIT in baselines)
    entries = [evaluation.get_baseline(b) for b in baselines if b != evaluation.MAPA_RANDOM_INIT]
    for entry in entries:
        points = 1
        for values in entry.grid.values():
            points *= len(values)
        runs += points
    return 1 + len(baselines), 1 + len(entries), runs


def expected_seconds(n_tasks: int, seeds: int, steps: int, baselines: Optional[Sequence[str]] = None) -> float:
    """A rough wall time of ``mapa evaluate`` on a 2-core CPU: per task, a compile per
    program plus ``runs x seeds x T`` steps (constants :data:`SECONDS_PER_PROGRAM`,
    :data:`SECONDS_PER_RUN_STEP`, :data:`SECONDS_FIXED`)."""
    _, programs, runs = evaluation_size(baselines)
    return SECONDS_FIXED + n_tasks * (SECONDS_PER_PROGRAM * programs + SECONDS_PER_RUN_STEP * runs * seeds * steps)


def expected_time_message(n_tasks: int, seeds: int, steps: int, baselines: Optional[Sequence[str]] = None) -> str:
    """One line: the size of the evaluation and :func:`expected_seconds`, as "about N minutes"."""
    methods, _, runs = evaluation_size(baselines)
    minutes = max(1, round(expected_seconds(n_tasks, seeds, steps, baselines) / 60))
    return (f"{n_tasks} tasks x {methods} methods ({runs} runs per task with the grid points) x {seeds} seed{'s' if seeds != 1 else ''} "
            f"x T = {steps} steps: expected about {minutes} minute{'s' if minutes != 1 else ''} on a 2-core CPU.")


def evaluate(args: argparse.Namespace, prog: str = "mapa evaluate") -> int:
    """Runs the evaluation that :func:`add_evaluate_arguments` options describe.

    Prints its expected time to stderr first (:func:`expected_time_message`),
    then :func:`mapa_jax.evaluation.markdown_report` tables (unless
    ``--json``) and, as the last line of stdout, the report as one JSON
    object. Returns the exit status (2 for bad options or an unloadable
    meta-learner, with the reason on stderr).
    """
    from mapa_jax import evaluation
    from mapa_jax import tasks as tasks_lib

    families = [f.strip() for f in args.families.split(",") if f.strip()]
    bad = [f for f in families if f not in tasks_lib.family_names()]
    if bad or not families:
        print(f"{prog}: unknown task families {bad or families}; known: {tasks_lib.family_names()}", file=sys.stderr)
        return 2
    baselines = evaluation.DEFAULT_BASELINES
    if args.baselines is not None:
        baselines = tuple(b.strip() for b in args.baselines.split(",") if b.strip())
        known = (evaluation.MAPA_RANDOM_INIT, *evaluation.baseline_names())
        unknown = [b for b in baselines if b not in known]
        if unknown or not baselines:
            print(f"{prog}: unknown baselines {unknown or baselines}; known: {list(known)}", file=sys.stderr)
            return 2
    quick = evaluation.QUICK
    n_seeds = args.seeds if args.seeds is not None else (quick["seeds"] if args.quick else 3)
    if args.long_horizon and args.steps is not None:
        print(f"{prog}: give --steps or --long-horizon, not both", file=sys.stderr)
        return 2
    steps = args.steps if args.steps is not None else (quick["steps"] if args.quick else None)
    if args.long_horizon:
        steps = evaluation.LONG_HORIZON_FACTOR * evaluation.default_steps()
    if n_seeds < 1 or (steps is not None and steps < 1):
        print(f"{prog}: --seeds and --steps must be >= 1, got {n_seeds} and {steps}", file=sys.stderr)
        return 2
    if args.first_seed < 0:
        print(f"{prog}: --first-seed must be >= 0, got {args.first_seed}", file=sys.stderr)
        return 2
    try:
        meta_params, config, source = _load_learner(args)
    except _SourceError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:  # CheckpointError is a ValueError
        print(f"{prog}: cannot load the meta-learner: {e}", file=sys.stderr)
        return 2
    n_tasks = sum(len(tasks_lib.family(f).tasks) if not args.quick else min(quick["tasks_per_family"],
                  len(tasks_lib.family(f).tasks)) for f in families)
    t_eval = steps if steps is not None else evaluation.default_steps()
    print(f"{prog}: {expected_time_message(n_tasks, n_seeds, t_eval, baselines)}", file=sys.stderr, flush=True)
    rep = evaluation.report(meta_params, config, families, list(range(args.first_seed, args.first_seed + n_seeds)),
                            steps, tasks_per_family=quick["tasks_per_family"] if args.quick else None,
                            source=source, progress=not args.no_progress and not args.json,
                            random_meta_params=run_initialization(source, config), baselines=baselines,
                            sharpness_radii=evaluation.RADII if args.sharpness else ())
    rep["quick"] = bool(args.quick)
    if not args.json:
        print(evaluation.markdown_report(rep))
    print(json.dumps(evaluation.jsonable(rep)))
    return 0


def _cpu_only() -> bool:
    """True unless an accelerator plugin is installed (then --devices counts real devices)."""
    import importlib.util

    return not any(importlib.util.find_spec(m) for m in ("jax_cuda12_plugin", "jax_cuda13_plugin", "libtpu"))


def _export(args: argparse.Namespace) -> int:
    from mapa_jax import pretrained
    from mapa_jax.meta import checkpoint as ckpt
    from mapa_jax.meta.config import PRESETS, MetaTrainConfig

    try:
        meta_params, config = ckpt.load_meta_params(args.checkpoint_dir)
        meta = ckpt.read_meta(args.checkpoint_dir)
    except ValueError as e:
        print(f"mapa export: {e}", file=sys.stderr)
        return 2
    missing = [k for k in ("train_config", "seed", "step", "skipped") if k not in meta]
    if missing:
        print(f"mapa export: the metadata of {args.checkpoint_dir!r} lacks the fields {missing} "
              "(a checkpoint not written by mapa meta-train?); the provenance needs them.", file=sys.stderr)
        return 2
    try:
        saved = MetaTrainConfig.from_dict(meta["train_config"])  # also reads configs of older versions
    except (TypeError, ValueError) as e:
        print(f"mapa export: the metadata field 'train_config' of {args.checkpoint_dir!r} is invalid: {e}",
              file=sys.stderr)
        return 2
    preset = next((n for n, p in PRESETS.items() if p == saved), None)
    how = f"--preset {preset}" if preset else "(a custom MetaTrainConfig, see train_config)"
    info = {
        "produced_by": f"mapa meta-train {how} --checkpoint-dir {args.checkpoint_dir} --seed {meta['seed']}",
        "seed": meta["seed"],
        "train_config": meta["train_config"],
        "meta_steps_run": meta["step"],
        "skipped_updates": meta["skipped"],
    }
    paths = pretrained.export(meta_params, config, info, args.name, directory=args.out_dir)
    print("wrote " + " and ".join(paths))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from mapa_jax import demo

    steps = demo.DEFAULT_STEPS if args.steps is None else args.steps
    try:
        if steps < 1:
            raise ValueError(f"--steps must be an integer >= 1, got {steps}.")
        out = demo.check_out(args.out)
    except ValueError as e:
        print(f"mapa demo: {e}", file=sys.stderr)
        return 2
    demo.run_demo(out, steps=steps, progress=not args.no_progress, print_table=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the ``mapa`` command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    0 on success; 2, with the reason on stderr, for bad options (argparse's
    usage errors included: they are returned, not raised) or inputs that
    cannot be loaded (a missing or corrupt checkpoint or pretrained file).
    """
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse printed the usage error (or --help) already
        return e.code if isinstance(e.code, int) else 2
    if args.command == "demo":
        return _demo(args)
    if args.command == "export":
        return _export(args)
    if args.command == "meta-train":
        if args.devices is not None and args.devices < 1:
            print(f"mapa: --devices must be >= 1, got {args.devices}", file=sys.stderr)
            return 2
        import jax

        if args.devices is not None and _cpu_only():
            # Simulated CPU devices; effective only before JAX's backend starts.
            jax.config.update("jax_num_cpu_devices", max(args.devices, jax.config.jax_num_cpu_devices))
        from mapa_jax.meta import train

        if args.preset not in train.PRESETS:
            print(f"mapa: unknown preset {args.preset!r}; known presets: {sorted(train.PRESETS)}", file=sys.stderr)
            return 2
        overrides = {} if args.meta_steps is None else {"meta_steps": args.meta_steps}
        try:
            cfg = train.preset(args.preset, **overrides)
            result = train.meta_train(
                cfg,
                checkpoint_dir=args.checkpoint_dir,
                seed=args.seed,
                resume=args.resume,
                devices=args.devices,
                progress=not args.no_progress,
            )
        except (ValueError, KeyError, TypeError) as e:
            print(f"mapa meta-train: {e}", file=sys.stderr)
            return 2
        last = next((r for r in reversed(result.metrics) if r.get("meta_loss") is not None), None)
        print(
            f"done: {cfg.meta_steps} meta-steps, {result.skipped_updates} skipped; "
            f"last meta-loss {last['meta_loss'] if last else 'n/a'}; checkpoint in {args.checkpoint_dir}"
        )
        return 0
    if args.command == "evaluate":
        return evaluate(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
