"""Per-tensor trajectory features over a window of k steps (paper Eq. 6).

The meta-learner never sees whole tensors. Each step reduces every tensor to a
few statistics (:func:`tensor_statistics`, from a small subsample of each
tensor; :func:`gradients_finite` is the one full pass, a plain sum over each
gradient to detect non-finite steps), keeps the last k steps of those
statistics in a small ring of shape ``(k, n_tensors, HISTORY_SIZE)`` and turns
them into scale-free features (:func:`trajectory_features`): clipped
log-magnitudes, their deviation and slope over the window, the
gradient/parameter alignment, the fraction of weights under the current
threshold, loss features relative to the loss's own recent scale, and a
step-count embedding. Without a loss (``value=None``) the loss features
are zero and a flag says so.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mapa_jax.proximal_update import (  # noqa: F401  (re-exported)
    SAMPLE_BLOCKS,
    SAMPLE_SIZE,
    compute_dtype,
    gradients_finite,
    sample,
)

Array = jax.Array

__all__ = [
    "FEATURE_NAMES",
    "NUM_FEATURES",
    "HORIZON_FEATURE_NAMES",
    "num_features",
    "progress",
    "tensor_scale",
    "HISTORY_SIZE",
    "SAMPLE_SIZE",
    "SAMPLE_BLOCKS",
    "sample",
    "STATS",
    "tensor_statistics",
    "gradients_finite",
    "log_rms",
    "trajectory_features",
    "push",
]

# Per-tensor statistics kept over the window, in this column order.
HISTORY = ("log_mean_abs_grad", "log_rms_param", "log_eta")
HISTORY_SIZE = len(HISTORY)

FEATURE_NAMES = (
    "log_abs_grad",  # clipped log mean |g|, / 10
    "log_rms_param",  # clipped log RMS of the parameter, / 10
    "grad_vs_window",  # log mean |g| minus its window mean
    "param_vs_window",  # log RMS param minus its window mean, x 10
    "grad_slope",  # slope of log mean |g| over the window, x k
    "grad_param_cos",  # cosine between gradient and parameter
    "frac_below_tau",  # fraction of |p| below the previous tau
    "log_eta",  # log(previous eta / eta_max) / 5
    "log_lam",  # log(previous lam) / 10
    "tau_frac",  # previous tau / tau_max
    "has_loss",  # 1 if value= was given
    "loss_vs_window",  # (loss - window mean) / window scale
    "loss_slope",  # slope of the loss over the window / window scale, x k
    "loss_vs_first",  # (loss - first loss) / |first loss|
    "log_step",  # log1p(step) / log1p(1000)
    "window_fill",  # min(step, k) / k
    "prox_mask",  # 1 if the prox applies to this tensor
    "log_size",  # log1p(number of elements) / 15
)
NUM_FEATURES = len(FEATURE_NAMES)

# Appended for a horizon-aware learner (MetaLearnerConfig.horizon_aware).
HORIZON_FEATURE_NAMES = (
    "has_horizon",  # 1 if total_steps was given
    "progress",  # min((step + 1) / total_steps, 1): 1 at the last step and after
)


def progress(count: Array, total_steps: int) -> Array:
    """The fraction of training done at the step after ``count`` finite steps:
    ``min((count + 1) / total_steps, 1)``, so 1 at the last step and after it."""
    return jnp.minimum((jnp.asarray(count) + 1).astype(jnp.float32) / total_steps, 1.0)


def num_features(horizon_aware: bool) -> int:
    """Width of the feature vector: :data:`FEATURE_NAMES`, plus :data:`HORIZON_FEATURE_NAMES` if ``horizon_aware``."""
    return NUM_FEATURES + (len(HORIZON_FEATURE_NAMES) if horizon_aware else 0)

_TINY = 1e-30
_LOG_CLIP = (-30.0, 10.0)
_DEV_CLIP = 5.0


# Statistics come from a subsample of at most SAMPLE_SIZE elements per tensor
# (:func:`sample`: SAMPLE_BLOCKS evenly spaced contiguous blocks, all of a
# smaller tensor), defined in :mod:`mapa_jax.proximal_update` with why.
STATS = (
    "mean_abs_grad",
    "mean_sq_param",
    "mean_grad_param",
    "mean_sq_grad",
    "frac_below_tau",
)




def tensor_statistics(
    grads: list[Array],
    params: list[Array],
    tau: Array,
    sample_size: int = SAMPLE_SIZE,
) -> Array:
    """Per-tensor statistics ``(n_tensors, len(STATS))``, laid out as :data:`STATS`.

    Means over a subsample of at most ``sample_size`` entries per tensor (see
    :func:`sample`), taken at the same positions in ``g`` and ``p``: ``mean
    |g|``, ``mean p**2``, ``mean g p``, ``mean g**2`` and the fraction of
    ``|p| < tau``. Exact for tensors of at most ``sample_size`` entries.
    Computed in float32 (or wider); the statistics of all tensors are computed
    together, as ``(n, sample_size)`` arrays. Non-finite sampled entries make
    the statistics non-finite; entries outside the sample are not seen (see
    :func:`gradients_finite`).
    """
    ct = compute_dtype(jnp.result_type(*params))
    sizes = [min(int(p.size), sample_size) for p in params]
    gs = jnp.stack([sample(g, sample_size) for g in grads]).astype(ct)
    ps = jnp.stack([sample(p, sample_size) for p in params]).astype(ct)
    w = (jnp.arange(sample_size)[None, :] < jnp.asarray(sizes)[:, None]).astype(ct)
    w = w / jnp.asarray(sizes, ct)[:, None]
    below = (jnp.abs(ps) < jnp.asarray(tau, ct)[:, None]).astype(ct)
    return jnp.stack(
        [
            jnp.sum(w * jnp.abs(gs), axis=1),
            jnp.sum(w * ps * ps, axis=1),
            jnp.sum(w * gs * ps, axis=1),
            jnp.sum(w * gs * gs, axis=1),
            jnp.sum(w * below, axis=1),
        ],
        axis=1,
    ).astype(jnp.float32)


# Floors of :func:`tensor_scale`: a fraction of the mean scale over tensors,
# and an absolute one (for a model whose tensors all start at zero).
SCALE_FLOOR_FRACTION = 0.1
SCALE_FLOOR = 1e-3


def tensor_scale(stats: Array) -> Array:
    """Each tensor's own scale, ``(n,)``, from :func:`tensor_statistics`'s ``(n, len(STATS))``.

    ``s = max(rms(p), SCALE_FLOOR_FRACTION * mean over tensors of rms(p),
    SCALE_FLOOR)``, with ``rms(p)`` from the subsample (exact for small
    tensors). The floors serve tensors that start at zero (biases, zero-
    initialized layers), whose own RMS says nothing about the step they need.
    """
    rms = jnp.sqrt(jnp.maximum(stats[:, STATS.index("mean_sq_param")], 0.0))
    floor = SCALE_FLOOR_FRACTION * jnp.sum(rms) / jnp.maximum(jnp.sum(rms > 0), 1)
    return jnp.maximum(jnp.maximum(rms, floor), SCALE_FLOOR)


def log_rms(mean_sq: Array) -> Array:
    """Clipped ``log(sqrt(mean_sq))``; finite for zero tensors."""
    return jnp.clip(0.5 * jnp.log(mean_sq + _TINY), *_LOG_CLIP)


def push(ring: Array, row: Array) -> Array:
    """Appends ``row`` as the newest entry of a ring whose last row is newest."""
    return jnp.concatenate([ring[1:], row[None]], axis=0)


def _window_mask(count: Array, k: int) -> Array:
    """Valid rows of a ring after ``count`` pushes (the newest ``min(count, k)``)."""
    return jnp.arange(k) >= k - jnp.minimum(count, k)


def _masked_mean(x: Array, w: Array, axis: int = 0) -> Array:
    w = jnp.expand_dims(w, tuple(range(1, x.ndim))) if x.ndim > 1 else w
    return jnp.sum(x * w, axis=axis) / jnp.maximum(jnp.sum(w, axis=0), 1.0)


def _masked_slope(x: Array, w: Array) -> Array:
    """Least-squares slope of ``x`` (rows are steps) over the valid rows."""
    t = jnp.arange(x.shape[0], dtype=x.dtype)
    t_mean = _masked_mean(t, w)
    x_mean = _masked_mean(x, w)
    wt = (t - t_mean) * w
    wt = jnp.expand_dims(wt, tuple(range(1, x.ndim))) if x.ndim > 1 else wt
    num = jnp.sum(wt * (x - x_mean), axis=0)
    den = jnp.sum(w * (t - t_mean) ** 2)
    return num / jnp.maximum(den, 1e-12)


def trajectory_features(
    *,
    stats: Array,
    sizes: Array,
    history: Array,
    loss_history: Array,
    loss_first: Array,
    count: Array,
    loss: Array | None,
    prev_eta: Array,
    prev_lam: Array,
    prev_tau: Array,
    prox_mask: Array,
    eta_max: float | Array,
    tau_max: float | Array,
    horizon_aware: bool = False,
    progress: Array | None = None,
    has_horizon: Array | None = None,
) -> tuple[Array, Array, Array]:
    """Features for the LSTM, and the updated rings.

    Args:
      stats: ``(n, len(STATS))`` from :func:`tensor_statistics` for each tensor.
      sizes: ``(n,)`` number of elements of each tensor.
      history: ``(k, n, HISTORY_SIZE)`` ring of past per-tensor statistics
        (newest last), before this step.
      loss_history: ``(k,)`` ring of past losses, before this step.
      loss_first: the first loss seen (0 before any).
      count: number of finite steps taken before this one.
      loss: this step's loss, or None.
      prev_eta, prev_lam, prev_tau: ``(n,)`` the meta-learner's last outputs.
      prox_mask: ``(n,)`` 1.0 where the prox applies.
      eta_max, tau_max: the output bounds (to normalize the previous outputs):
        scalars, or ``(n,)`` per-tensor bounds.
      horizon_aware: append :data:`HORIZON_FEATURE_NAMES`.
      progress: with ``horizon_aware``, the fraction of training done
        (:func:`progress`), or None when the length is
        not known (both horizon features are then 0).
      has_horizon: with ``progress``, the ``has_horizon`` feature (a bool or
        0/1 scalar; default 1); the caller zeroes ``progress`` where it is 0.

    Returns:
      ``(features (n, num_features(horizon_aware)), history with this step's row pushed
      (log RMS grad and param, log of the eta in force before this step),
      loss_history with this loss pushed (unchanged without a loss))``.
    """
    k, n = history.shape[0], history.shape[1]
    sizes = sizes.astype(jnp.float32)
    col = {name: stats[:, i] for i, name in enumerate(STATS)}
    lg = jnp.clip(jnp.log(col["mean_abs_grad"] + _TINY), *_LOG_CLIP)
    lp = log_rms(col["mean_sq_param"])
    cos = col["mean_grad_param"] / jnp.sqrt(col["mean_sq_grad"] * col["mean_sq_param"] + _TINY)
    row = jnp.stack([lg, lp, jnp.log(prev_eta + _TINY)], axis=-1)
    history = push(history, row)
    valid = _window_mask(count + 1, k).astype(jnp.float32)
    mean = _masked_mean(history, valid)  # (n, HISTORY_SIZE)
    grad_slope = _masked_slope(history[:, :, 0], valid)

    step = count.astype(jnp.float32)
    common = [
        jnp.log1p(step) / jnp.log1p(1000.0),
        jnp.minimum(step + 1.0, k) / k,
    ]
    if loss is None:
        loss_feats = [jnp.zeros(()), jnp.zeros(()), jnp.zeros(()), jnp.zeros(())]
    else:
        loss = jnp.asarray(loss, jnp.float32)
        loss_history = push(loss_history, loss)
        first = first_loss(loss_first, count, loss)
        lmean = _masked_mean(loss_history, valid)
        lvar = _masked_mean((loss_history - lmean) ** 2, valid)
        scale = jnp.sqrt(lvar + _TINY) + 1e-3 * jnp.abs(lmean) + 1e-12
        loss_feats = [
            jnp.ones(()),
            jnp.clip((loss - lmean) / scale, -_DEV_CLIP, _DEV_CLIP),
            jnp.clip(_masked_slope(loss_history, valid) * k / scale, -_DEV_CLIP, _DEV_CLIP),
            jnp.clip((loss - first) / (jnp.abs(first) + 1e-12), -_DEV_CLIP, _DEV_CLIP),
        ]
    per_tensor = [
        lg / 10.0,
        lp / 10.0,
        jnp.clip(lg - mean[:, 0], -_DEV_CLIP, _DEV_CLIP),
        jnp.clip(10.0 * (lp - mean[:, 1]), -_DEV_CLIP, _DEV_CLIP),
        jnp.clip(grad_slope * k, -_DEV_CLIP, _DEV_CLIP),
        jnp.clip(cos, -1.0, 1.0),
        col["frac_below_tau"],
        jnp.clip(jnp.log(prev_eta / eta_max + _TINY), -25.0, 0.0) / 5.0,
        jnp.clip(jnp.log(prev_lam + _TINY), -30.0, 10.0) / 10.0,
        prev_tau / tau_max,
    ]
    horizon = []  # after the paper's features, so that theirs keep their columns
    if horizon_aware:
        if progress is None:
            horizon = [jnp.zeros(()), jnp.zeros(())]
        else:
            known = jnp.ones(()) if has_horizon is None else jnp.asarray(has_horizon, jnp.float32)
            horizon = [known, jnp.clip(jnp.asarray(progress, jnp.float32), 0.0, 1.0)]
    broadcast = [jnp.broadcast_to(f, (n,)) for f in loss_feats + common]
    statics = [prox_mask.astype(jnp.float32), jnp.log1p(sizes) / 15.0]
    statics += [jnp.broadcast_to(f, (n,)) for f in horizon]
    feats = jnp.stack(per_tensor + broadcast + statics, axis=-1)
    return feats, history, loss_history


def first_loss(loss_first: Array, count: Array, loss: Array | None) -> Array:
    """The first loss seen: this one if no step was taken yet."""
    if loss is None:
        return loss_first
    return jnp.where(count == 0, jnp.asarray(loss, jnp.float32), loss_first)
