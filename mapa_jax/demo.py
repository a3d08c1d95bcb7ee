"""``mapa demo``: the shipped MAPA, Adam and Prodigy on a small CNN, in about a minute.

What a user would write: a small Flax CNN on scikit-learn's bundled 8x8
handwritten digits (:func:`mapa_jax.tasks.datasets.load_dataset`, fixed
60/20/20 split, offline), trained with

* ``"mapa"``: the shipped meta-learner, ``mj.mapa(*mj.load_pretrained(), graph=...)``
  with the model's traced architecture graph, the loss passed as ``value=``;
* ``"adam"``: ``optax.adam(1e-3)``;
* ``"prodigy"``: ``optax.contrib.prodigy()``, tuning-free (learning rate 1.0,
  its step size estimated online);

from the same initialization, on the same minibatches. Each optimizer's
training is one compiled ``lax.scan`` per chunk of steps (compiled ahead of
time, so that the time per step excludes compilation); the test loss is
measured on parameter snapshots after each chunk, outside the timed run.

:func:`run_demo` prints a table (final train / test loss, test accuracy,
sparsity = fraction of weight-tensor entries with ``|w| < 1e-6``, ms per
step) and writes a figure: the three loss curves and MAPA's learned eta,
lambda and tau per tensor over the steps (from :func:`mapa_jax.proximal_parameters`
after every step).

The digits dataset is also one of the datasets of the shipped meta-learner's
meta-training tasks (other architectures: MLPs and CNNs of the model zoo;
``mapa_jax/tasks/zoo.py``); this CNN is not one of them. The held-out
comparison is ``mapa evaluate``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import mapa_jax as mj

__all__ = ["DEFAULT_STEPS", "BATCH_SIZE", "OPTIMIZERS", "SmallCNN", "run_demo", "format_table", "check_out"]

#: Steps of the default demo (the shipped meta-learner was meta-trained on runs of 100-200 steps).
DEFAULT_STEPS = 400
#: Minibatch size (as the digits tasks of meta-training).
BATCH_SIZE = 64
#: The optimizers compared, in table order.
OPTIMIZERS = ("mapa", "adam", "prodigy")
#: Steps per compiled chunk: the progress bar and the test-loss curve advance once per chunk.
_CHUNK = 20
#: A weight counts as zero for the sparsity when ``|w| <`` this (as in :mod:`mapa_jax.evaluation`).
_ZERO = 1e-6


class SmallCNN(nn.Module):
    """Two 3x3 convolutions with average pooling, then a hidden dense layer: 8x8x1 -> 10 logits."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Conv(16, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))  # 4x4x16
        x = nn.relu(nn.Conv(32, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))  # 2x2x32
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(64)(x))
        return nn.Dense(10)(x)


def _optimizer(name: str, model: nn.Module, params: Any, example: jax.Array) -> optax.GradientTransformation:
    if name == "mapa":
        meta_params, config = mj.load_pretrained()
        graph = mj.architecture_graph(model.apply, {"params": params}, example)
        return mj.mapa(meta_params, config, graph=graph)
    if name == "adam":
        return optax.adam(1e-3)
    if name == "prodigy":
        return optax.contrib.prodigy()
    raise ValueError(f"unknown demo optimizer {name!r}; known: {list(OPTIMIZERS)}.")


def _tensor_names(params: Any) -> list[str]:
    return ["/".join(str(getattr(k, "key", k)) for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]


def _sparsity(params: Any) -> float:
    weights = [np.asarray(p) for p in jax.tree.leaves(params) if np.ndim(p) >= 2]
    return float(sum(int(np.sum(np.abs(w) < _ZERO)) for w in weights) / sum(w.size for w in weights))


def check_out(out: str) -> str:
    """``out``, after checking that a PNG can be written there; a ValueError naming ``--out`` otherwise."""
    out = os.fspath(out)
    if not out.lower().endswith(".png"):
        raise ValueError(f"--out must name a .png file, got {out!r}.")
    directory = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(directory):
        raise ValueError(f"--out {out!r}: the directory {directory!r} does not exist.")
    if os.path.isdir(out):
        raise ValueError(f"--out {out!r} is a directory; give a .png file name.")
    existed = os.path.exists(out)
    try:  # the real test (os.access says yes to root everywhere)
        with open(out, "ab"):
            pass
    except OSError as e:
        raise ValueError(f"--out {out!r} is not writable: {e.strerror}.") from None
    if not existed:
        os.remove(out)
    return out


def run_demo(out: Optional[str] = "demo.png", steps: int = DEFAULT_STEPS, progress: bool = True,
             *, seed: int = 0, print_table: bool = False) -> dict[str, Any]:
    """Trains :class:`SmallCNN` on digits with MAPA, Adam and Prodigy and writes the figure.

    Args:
      out: where the PNG goes (None: no figure).
      steps: training steps per optimizer (>= 1).
      progress: a tqdm progress bar on stderr.
      seed: the initialization and minibatch seed, shared by the three.
      print_table: print :func:`format_table` of the result to stdout.

    Returns:
      ``{"steps", "batch_size", "seed", "num_params", "tensors", "optimizers":
      {name: {"train_loss", "test_loss", "test_accuracy", "sparsity",
      "ms_per_step", "compile_s", "loss_curve", "test_curve"}}, "curve_steps",
      "proximal_parameters": {"eta", "lam", "tau"} (arrays of shape
      (steps, n_tensors), MAPA's after each step), "panels", "out", "wall_s"}``.
      ``train_loss`` / ``test_loss`` are the mean cross-entropies on the whole
      train / test split after the last step, ``loss_curve`` the minibatch
      losses, ``test_curve`` the test loss at the start and after each chunk
      (at ``curve_steps``).

    Raises:
      ValueError: ``steps < 1`` or an ``out`` that cannot be written.
    """
    t_start = time.perf_counter()
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"--steps must be an integer >= 1, got {steps!r}.")
    steps = int(steps)
    if out is not None:
        out = check_out(out)
    from mapa_jax.tasks.datasets import load_dataset

    data = load_dataset("digits")
    x_train, y_train = jnp.asarray(data.x["train"]), jnp.asarray(data.y["train"])
    x_test, y_test = jnp.asarray(data.x["test"]), jnp.asarray(data.y["test"])
    model = SmallCNN()
    params0 = jax.jit(model.init)(jax.random.key(seed), x_train[:1])["params"]
    names = _tensor_names(params0)
    rng = np.random.default_rng(seed)
    batches = np.stack([rng.choice(len(y_train), BATCH_SIZE, replace=False) for _ in range(steps)]).astype(np.int32)

    def loss_fn(p, x, y):
        logits = model.apply({"params": p}, x)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    @jax.jit
    def evaluate(p, x, y):
        logits = model.apply({"params": p}, x)
        loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
        return loss, jnp.mean(jnp.argmax(logits, -1) == y)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(OPTIMIZERS) * steps, desc="mapa demo", unit="step", file=sys.stderr)
    results: dict[str, Any] = {}
    prox_params = None
    bounds = list(range(0, steps, _CHUNK)) + [steps]
    for name in OPTIMIZERS:
        if bar is not None:
            bar.set_postfix_str(f"{name}: compiling")
        tx = _optimizer(name, model, params0, x_train[:1])
        is_mapa = name == "mapa"

        def chunk(carry, idx, tx=tx, is_mapa=is_mapa):
            def step(c, i):
                p, s = c
                loss, grads = jax.value_and_grad(loss_fn)(p, x_train[i], y_train[i])
                updates, s = tx.update(grads, s, p, value=loss)
                p = optax.apply_updates(p, updates)
                if is_mapa:
                    pp = mj.proximal_parameters(s)
                    logged = jnp.stack([jnp.stack(jax.tree.leaves(pp[k])) for k in ("eta", "lam", "tau")])
                else:
                    logged = jnp.zeros((3, 0), jnp.float32)
                return (p, s), (loss, logged)

            return jax.lax.scan(step, carry, idx)

        carry = (params0, tx.init(params0))
        t0 = time.perf_counter()
        compiled = {}
        for size in sorted({b - a for a, b in zip(bounds[:-1], bounds[1:])}):
            compiled[size] = jax.jit(chunk).lower(carry, batches[:size]).compile()
        compile_s = time.perf_counter() - t0
        losses, logged, run_s = [], [], 0.0
        test_curve = [float(evaluate(params0, x_test, y_test)[0])]
        for a, b in zip(bounds[:-1], bounds[1:]):
            if bar is not None:
                bar.set_postfix_str(name)
            t0 = time.perf_counter()
            carry, (loss, log) = compiled[b - a](carry, batches[a:b])
            jax.block_until_ready(carry)
            run_s += time.perf_counter() - t0
            losses.append(np.asarray(loss))
            logged.append(np.asarray(log))
            test_curve.append(float(evaluate(carry[0], x_test, y_test)[0]))
            if bar is not None:
                bar.update(b - a)
        params = carry[0]
        train_loss, _ = evaluate(params, x_train, y_train)
        test_loss, test_acc = evaluate(params, x_test, y_test)
        results[name] = {
            "train_loss": float(train_loss),
            "test_loss": float(test_loss),
            "test_accuracy": float(test_acc),
            "sparsity": _sparsity(params),
            "ms_per_step": 1e3 * run_s / steps,
            "compile_s": compile_s,
            "loss_curve": np.concatenate(losses),
            "test_curve": np.asarray(test_curve),
        }
        if is_mapa:
            prox_params = np.concatenate(logged, axis=0)  # (steps, 3, n_tensors)
    if bar is not None:
        bar.close()
    rep = {
        "steps": steps,
        "batch_size": BATCH_SIZE,
        "seed": seed,
        "num_params": int(sum(np.size(p) for p in jax.tree.leaves(params0))),
        "tensors": names,
        "optimizers": results,
        "curve_steps": np.asarray(bounds),
        "proximal_parameters": {k: prox_params[:, i, :] for i, k in enumerate(("eta", "lam", "tau"))},
        "out": out,
    }
    rep["panels"] = _figure(rep, out) if out is not None else []
    rep["wall_s"] = time.perf_counter() - t_start
    if print_table:
        print(format_table(rep))
    return rep


_LABELS = {"mapa": "MAPA (shipped)", "adam": "optax.adam(1e-3)", "prodigy": "optax.contrib.prodigy()"}


def format_table(rep: dict[str, Any]) -> str:
    """The markdown table of a :func:`run_demo` result."""
    lines = [
        f"SmallCNN on digits ({rep['num_params']} params), {rep['steps']} steps of batch {rep['batch_size']}, "
        f"seed {rep['seed']}; same init and minibatches for all",
        "",
        "| optimizer | train loss | test loss | test accuracy | sparsity | ms / step | compile s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rep["optimizers"].items():
        lines.append(
            f"| {_LABELS.get(name, name)} | {r['train_loss']:.4f} | {r['test_loss']:.4f} | {r['test_accuracy']:.3f} "
            f"| {r['sparsity']:.3f} | {r['ms_per_step']:.2f} | {r['compile_s']:.1f} |"
        )
    best = min(rep["optimizers"], key=lambda n: rep["optimizers"][n]["test_loss"])
    lines += ["", f"lowest test loss: {_LABELS.get(best, best)}."]
    if rep.get("out"):
        lines.append(f"wrote {rep['out']}")
    return "\n".join(lines)


def _smooth(y: np.ndarray, width: int) -> np.ndarray:
    width = max(1, min(width, len(y)))
    return np.convolve(y, np.ones(width) / width, mode="valid")


def _figure(rep: dict[str, Any], out: str) -> list[str]:
    """Writes the 2x2 figure; returns the panel titles."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    fig = Figure(figsize=(11, 7.5), layout="constrained")
    axes = fig.subplots(2, 2)
    ax = axes[0, 0]
    colors = {"mapa": "C3", "adam": "C0", "prodigy": "C2"}
    width = max(1, rep["steps"] // 40)
    for name, r in rep["optimizers"].items():
        c = colors.get(name)
        curve = _smooth(r["loss_curve"], width)
        ax.plot(np.arange(len(curve)) + width, curve, color=c, alpha=0.45, lw=1)
        ax.plot(rep["curve_steps"], r["test_curve"], color=c, lw=2, marker="o", ms=2.5,
                label=f"{_LABELS[name]}: test {r['test_loss']:.3f}, acc {r['test_accuracy']:.3f}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.set_title(f"loss: test (thick), minibatch (thin, {width}-step mean)")
    ax.legend(fontsize=8)
    pp = rep["proximal_parameters"]
    steps = np.arange(1, rep["steps"] + 1)
    titles = {"eta": "MAPA's step size eta per tensor", "lam": "MAPA's lambda per weight tensor",
              "tau": "MAPA's tau per weight tensor"}
    layers = list(dict.fromkeys(n.split("/")[0] for n in rep["tensors"]))
    for ax, key in zip((axes[0, 1], axes[1, 0], axes[1, 1]), ("eta", "lam", "tau")):
        for i, name in enumerate(rep["tensors"]):
            kernel = name.endswith("kernel")
            if key != "eta" and not kernel:  # lambda and tau act only where the prox does
                continue
            ax.plot(steps, pp[key][:, i], color=f"C{layers.index(name.split('/')[0])}", ls="-" if kernel else "--",
                    lw=1.3, label=name)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(titles[key])
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle("mapa demo: SmallCNN on sklearn digits (8x8); MAPA's prox acts on the kernels (ndim >= 2)")
    fig.savefig(out, dpi=110)
    return [a.get_title() for a in axes.flat]
