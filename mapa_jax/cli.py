"""The ``mapa`` command line.

    mapa meta-train --preset {smoke,default} --checkpoint-dir DIR [--seed N] [--resume] [--devices N]
    mapa evaluate [--checkpoint-dir DIR | --pretrained NAME] [--families meta_train,meta_test]
                  [--seeds N] [--first-seed S] [--steps T] [--quick] [--json]

``mapa evaluate`` runs a meta-learner (default: the shipped one) against
grid-tuned proximal baselines on held-out seeds and prints markdown tables and
a JSON line (``mapa_jax.meta.evaluate``; same as ``benchmarks/evaluate_meta.py``).

``--devices N`` on a CPU-only machine simulates N CPU devices (set before
JAX's backend starts).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mapa", description="mapa_jax: meta-learned adaptive proximal optimization")
    sub = ap.add_subparsers(dest="command", required=True)
    mt = sub.add_parser("meta-train", help="meta-train a MAPA meta-learner")
    mt.add_argument("--preset", default="default", help="smoke (about a minute) or default (the shipped one)")
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
    from mapa_jax.meta.evaluate import add_arguments

    add_arguments(ev)
    return ap


def _cpu_only() -> bool:
    """True unless an accelerator plugin is installed (then --devices counts real devices)."""
    import importlib.util

    return not any(importlib.util.find_spec(m) for m in ("jax_cuda12_plugin", "jax_cuda13_plugin", "libtpu"))


def _export(args: argparse.Namespace) -> int:
    from mapa_jax import pretrained
    from mapa_jax.meta import checkpoint as ckpt

    try:
        meta_params, config = ckpt.load_meta_params(args.checkpoint_dir)
        meta = ckpt.read_meta(args.checkpoint_dir)
    except ValueError as e:
        print(f"mapa export: {e}", file=sys.stderr)
        return 2
    from mapa_jax.meta.config import PRESETS, MetaTrainConfig

    saved = MetaTrainConfig.from_dict(meta["train_config"])  # also reads configs of older versions
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
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
        from mapa_jax.meta import evaluate

        return evaluate.run_from_args(args, prog="mapa evaluate")
    return 2


if __name__ == "__main__":
    sys.exit(main())
