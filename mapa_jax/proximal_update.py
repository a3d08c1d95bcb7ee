"""The proximal update shared by every optimizer of mapa_jax, and its validation.

One step of a (preconditioned) proximal method is a plain move ``u`` (e.g.
``-lr * g``, or Adam's ``-lr * m_hat / d``) followed, on the masked tensors,
by the prox of the penalty at the moved point:

    update = prox(p + u, step) - p      (masked tensors)
    update = u                          (the others)

:func:`proximal_updates` is that step, for the fixed-parameter optimizers of
:mod:`mapa_jax.transforms` and for the learned one, :func:`mapa_jax.mapa`.
:func:`adam_direction` is Adam's direction for both (moments, bias-corrected
first moment and preconditioner ``d = sqrt(v_hat) + eps``); each scales it by
its own step size (a learning rate, or MAPA's per-tensor eta).
:func:`gradients_finite` is the non-finite check of :func:`mapa_jax.mapa` and
:func:`mapa_jax.skip_nonfinite`: one plain sum per gradient.

Arithmetic runs in the compute dtype, :func:`compute_dtype`: float32, or wider
if the input already is. Low-precision params (bfloat16, float16) are moved and
proxed in float32, their moments accumulated in float32 and stored in the
param dtype; updates have the param dtype.

The checks here run at trace time only (tree structures, shapes, dtypes and
masks are static): :func:`check_params`, :func:`resolve_mask`,
:func:`make_prox`, :func:`check_learning_rate`. Errors name the tree path and
what was expected.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mapa_jax import prox as prox_lib

Array = jax.Array
ProxFn = Callable[[Array, Any], Array]
MaskOrFn = Union[Any, Callable[[optax.Params], Any], None]

__all__ = [
    "ProxFn",
    "MaskOrFn",
    "compute_dtype",
    "as_compute_dtype",
    "default_mask",
    "check_learning_rate",
    "check_params",
    "check_state_type",
    "check_state_matches",
    "resolve_mask",
    "make_prox",
    "proximal_updates",
    "update_moment",
    "preconditioner",
    "adam_direction",
    "gradients_finite",
    "SAMPLE_SIZE",
    "SAMPLE_BLOCKS",
    "sample",
    "DISTANCE_D0",
    "DistanceState",
    "init_distance_state",
    "distance_direction",
]


# --------------------------------------------------------------------------
# The compute dtype.


def compute_dtype(dtype: jax.typing.DTypeLike) -> jnp.dtype:
    """The dtype arithmetic on ``dtype`` runs in: float32, or wider if ``dtype`` is.

    bfloat16, float16 -> float32; float32 -> float32; float64 -> float64.
    """
    return jnp.promote_types(dtype, jnp.float32)


def as_compute_dtype(x: Array) -> Array:
    """``x`` in :func:`compute_dtype` of its dtype (float32, or wider if it already is)."""
    return x.astype(compute_dtype(x.dtype))


# --------------------------------------------------------------------------
# Validation shared by the optimizers.


def default_mask(params: optax.Params) -> Any:
    """The default prox mask: True for tensors with ``ndim >= 2`` (weights)."""
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def check_learning_rate(learning_rate: Any, where: str) -> None:
    """A constant learning rate must be a finite number ``>= 0``."""
    if callable(learning_rate):
        return
    prox_lib.check_nonnegative("learning_rate", learning_rate, where)
    if jnp.ndim(learning_rate) != 0:
        raise ValueError(
            f"{where}: learning_rate must be a scalar or an optax schedule, "
            f"got shape {jnp.shape(learning_rate)}."
        )


def _path(path: Any) -> str:
    return jax.tree_util.keystr(path) or "<root>"


def check_params(updates: optax.Updates, params: Optional[optax.Params], where: str) -> None:
    """Checks that params exist, match the updates' tree and are floating point.

    Runs at trace time only (structures, shapes and dtypes are static).
    """
    if params is None:
        raise ValueError(
            f"{where} needs params: call update(updates, state, params); got params=None."
        )
    u_def = jax.tree.structure(updates)
    p_def = jax.tree.structure(params)
    if u_def != p_def:
        raise ValueError(
            f"{where}: updates (gradients) and params have different tree structures:\n"
            f"  updates: {u_def}\n  params:  {p_def}"
        )
    for (path, u), p in zip(
        jax.tree_util.tree_leaves_with_path(updates), jax.tree.leaves(params)
    ):
        if not jnp.issubdtype(jnp.result_type(p), jnp.floating):
            raise TypeError(
                f"{where}: param {_path(path)} has dtype {jnp.result_type(p)}; "
                "proximal optimizers need floating-point params."
            )
        if jnp.shape(u) != jnp.shape(p):
            raise ValueError(
                f"{where}: update {_path(path)} has shape {jnp.shape(u)} but the "
                f"param has shape {jnp.shape(p)}."
            )


def check_state_type(state: Any, state_cls: type, where: str) -> None:
    """Raises ``TypeError`` unless ``state`` is a ``state_cls`` (what the transform's ``init`` returns).

    Runs at trace time only (a Python type check).
    """
    if not isinstance(state, state_cls):
        raise TypeError(
            f"{where}: state must be the {state_cls.__name__} that init(params) returned, "
            f"got {type(state).__name__}."
        )


def check_state_matches(
    tree: Any, params: optax.Params, where: str, what: str, *, shapes: bool = True
) -> None:
    """Raises ``ValueError`` if ``tree``, a part of an optimizer state, was built for other params.

    ``tree`` must have the tree structure of ``params`` and, with ``shapes``
    (moments: one entry per coordinate), each leaf the shape of its param.
    Runs at trace time only (structures and shapes are static).

    Args:
      tree: the state's part shaped like params (e.g. ``state.mu``).
      params: the params given to ``update``.
      where: the caller, for the message (e.g. ``"prox_adam.update"``).
      what: the part's name, for the message (e.g. ``"state.mu"``).
      shapes: also compare leaf shapes (False for one scalar per tensor).
    """
    s_def, p_def = jax.tree.structure(tree), jax.tree.structure(params)
    if s_def != p_def:
        raise ValueError(
            f"{where}: the optimizer state was built for other params (call init on these params): "
            f"{what} has tree structure\n  {s_def}\nbut params has\n  {p_def}"
        )
    if not shapes:
        return
    for (path, s), p in zip(jax.tree_util.tree_leaves_with_path(tree), jax.tree.leaves(params)):
        if jnp.shape(s) != jnp.shape(p):
            raise ValueError(
                f"{where}: the optimizer state was built for other params (call init on these params): "
                f"{what}{_path(path)} has shape {jnp.shape(s)} but the param has shape {jnp.shape(p)}."
            )


def resolve_mask(mask: MaskOrFn, params: optax.Params, where: str) -> list[bool]:
    """Returns one Python bool per leaf of params (True: apply the prox).

    ``mask`` is as in ``optax.masked``: a pytree of bools shaped like params,
    a callable on params returning one, or None for :func:`default_mask`.
    """
    tree = default_mask(params) if mask is None else (mask(params) if callable(mask) else mask)
    try:
        flat = jax.tree.structure(params).flatten_up_to(tree)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"{where}: mask must be a pytree of bools with the structure of params "
            f"({jax.tree.structure(params)}), got {jax.tree.structure(tree)}."
        ) from e
    out = []
    for leaf in flat:
        if isinstance(leaf, jax.core.Tracer):
            raise ValueError(f"{where}: mask leaves must be Python bools, not traced arrays.")
        if jnp.ndim(leaf) != 0 or jnp.result_type(leaf) != jnp.bool_:
            raise ValueError(
                f"{where}: mask leaves must be bools (one per tensor), got {leaf!r}."
            )
        out.append(bool(leaf))
    return out


def make_prox(prox: Optional[ProxFn], l1: Any, l2: Any, where: str) -> Optional[ProxFn]:
    """The prox(x, step) to use: the user's, or the elastic net's (l1, l2).

    None when there is no penalty (no prox and ``l1 = l2 = 0``): the transform
    is then its plain, unproximated method, computed without the round trip
    ``prox(p + u) - p``.
    """
    prox_lib.check_nonnegative("l1", l1, where)
    prox_lib.check_nonnegative("l2", l2, where)
    if prox is not None:
        if not callable(prox):
            raise TypeError(f"{where}: prox must be a callable prox(x, step), got {prox!r}.")
        if any(isinstance(v, jax.core.Tracer) or np.any(np.asarray(v) != 0) for v in (l1, l2)):
            raise ValueError(
                f"{where}: pass either prox= or l1=/l2= (the default elastic-net prox), not both."
            )
        return prox
    traced = isinstance(l1, jax.core.Tracer) or isinstance(l2, jax.core.Tracer)
    if not traced and not (np.any(np.asarray(l1) != 0) or np.any(np.asarray(l2) != 0)):
        return None

    def elastic_net_prox(x: Array, step: Any) -> Array:
        return prox_lib.elastic_net(x, step * l1, step * l2)

    return elastic_net_prox


# --------------------------------------------------------------------------
# The proximal step.


def proximal_updates(
    moves: optax.Updates,
    params: optax.Params,
    steps: Any,
    mask: list[bool],
    prox: Optional[ProxFn],
) -> optax.Updates:
    """Updates ``prox(p + u, step) - p`` on masked leaves and ``u`` elsewhere.

    Args:
      moves: the plain updates ``u``, a tree shaped like params.
      params: the current params.
      steps: what ``prox`` receives besides the point: one value for all
        leaves, a tree shaped like params (e.g. per-coordinate steps of a
        preconditioned method), or a list with one entry per leaf (any object,
        e.g. a tuple of per-tensor parameters).
      mask: one bool per leaf (:func:`resolve_mask`): True applies the prox.
      prox: ``prox(x, step) -> array``, or None for no prox.

    Returns:
      The updates, a tree shaped like params with the params' dtypes. The prox
      round trip runs in :func:`compute_dtype`; ``prox=None`` returns the moves
      (in the params' dtypes).
    """
    treedef = jax.tree.structure(params)
    if isinstance(steps, list) and len(steps) == treedef.num_leaves:
        step_leaves = steps
    elif jax.tree.structure(steps) == treedef:
        step_leaves = treedef.flatten_up_to(steps)
    else:  # one step for every leaf
        step_leaves = [steps] * treedef.num_leaves
    out = []
    for u, p, step, on in zip(
        treedef.flatten_up_to(moves), treedef.flatten_up_to(params), step_leaves, mask
    ):
        if on and prox is not None:
            ct = compute_dtype(p.dtype)
            pf = p.astype(ct)
            u = prox(pf + u.astype(ct), step).astype(ct) - pf
        out.append(u.astype(p.dtype))
    return treedef.unflatten(out)


# --------------------------------------------------------------------------
# The non-finite check.


def gradients_finite(grads: Any) -> Array:
    """True iff every entry of every gradient in ``grads`` (a pytree) is finite.

    One plain sum per tensor, accumulated and returned in :func:`compute_dtype`:
    a sum is non-finite iff an entry is, or the sum overflows, which in float32
    or wider needs entries near the dtype's maximum (float16 gradients are
    summed in float32, so they cannot overflow it). On XLA:CPU a reduction of
    the raw array is the cheapest exact check: anything else (``isfinite(g)``,
    ``g * 0``) first writes a full-size temporary (``benchmarks/guard_cost.py``
    compares them). A tree without leaves is finite.
    """
    leaves = jax.tree.leaves(grads)
    if not leaves:
        return jnp.array(True)
    sums = jnp.stack([jnp.sum(g, dtype=compute_dtype(jnp.result_type(g))) for g in leaves])
    return jnp.all(jnp.isfinite(sums))


# --------------------------------------------------------------------------
# Moments and Adam's direction.


def update_moment(updates: optax.Updates, moments: Any, decay: float, order: int) -> Any:
    """Exponential moving average ``decay * m + (1 - decay) * g**order`` in
    :func:`compute_dtype`, stored in the moments' dtypes.

    Not ``optax.tree.update_moment``, for two reasons: optax computes in the
    dtypes of its inputs (bfloat16 moments of bfloat16 params would
    accumulate in bfloat16; here they accumulate in float32 and are rounded
    once), and it adds the two terms in the other order, which under ``jit``
    changes the last bit of float32 results (XLA:CPU fuses one of the two
    products into a fused multiply-add, and which one depends on the order).
    """
    def leaf(g: Array, m: Array) -> Array:
        return (decay * as_compute_dtype(m) + (1.0 - decay) * as_compute_dtype(g) ** order).astype(m.dtype)

    return jax.tree.map(leaf, updates, moments)


def preconditioner(nu_hat: Array, eps: float) -> Array:
    """``sqrt(nu_hat) + eps``, with a gradient that is finite where ``nu_hat = 0``.

    ``nu_hat`` is the (bias-corrected) second moment in the compute dtype. The
    square root's argument is floored at 1e-30 (a coordinate whose gradients
    were all zero has ``nu_hat = 0``), which changes values by at most 1e-15
    and makes the derivative there zero instead of infinite.
    """
    return jnp.sqrt(jnp.maximum(nu_hat, 1e-30)) + eps


def _select(keep: Optional[Array], new: Any, old: Any) -> Any:
    """``new`` where the boolean scalar ``keep`` is True, ``old`` where it is False (``new`` if it is None)."""
    if keep is None:
        return new
    return jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, old)


def adam_direction(
    updates: optax.Updates,
    mu: Any,
    nu: Any,
    count: Array,
    *,
    b1: float,
    b2: float,
    eps: float,
    keep: Optional[Array] = None,
) -> tuple[Any, Any, Any, Any]:
    r"""Adam's moments and preconditioned direction, before any step size.

    .. math::
        m_t = b_1 m_{t-1} + (1 - b_1) g, \quad v_t = b_2 v_{t-1} + (1 - b_2) g^2,
        \quad \hat m = m_t / (1 - b_1^t), \quad d = \sqrt{v_t / (1 - b_2^t)} + \epsilon

    The step is ``-s * m_hat / d`` and the prox step ``s / d`` for a step size
    ``s`` (a learning rate, or MAPA's per-tensor eta), computed by the caller.

    Args:
      updates: the gradients ``g``, a tree shaped like params.
      mu, nu: the stored moments (trees shaped like params, in the params'
        dtypes).
      count: the number ``t >= 1`` of this step (an integer array).
      b1, b2: moment decay rates in ``[0, 1)``.
      eps: added to ``sqrt(v_hat)``.
      keep: optional boolean scalar; where False the moments stay as stored.
        The selection happens inside the moment update, so that a guarded
        update reads the stored moments in one pass.

    Returns:
      ``(mu, nu, m_hat, d)``: the new moments (in their dtypes), and the
      bias-corrected first moment and the preconditioner in the compute
      dtype, all trees shaped like params.
    """

    mu = _select(keep, update_moment(updates, mu, b1, 1), mu)
    nu = _select(keep, update_moment(updates, nu, b2, 2), nu)
    # Not optax.tree.bias_correction: it is its own jit, inside which XLA turns
    # the division by the broadcast correction into a multiplication by its
    # reciprocal; called eagerly it then differs in the last bit from this
    # division (under an outer jit the two agree).
    t = count.astype(jnp.float32)
    c1, c2 = 1.0 - b1**t, 1.0 - b2**t
    m_hat = jax.tree.map(lambda m: as_compute_dtype(m) / c1, mu)
    return mu, nu, m_hat, jax.tree.map(lambda v: preconditioner(as_compute_dtype(v) / c2, eps), nu)


# --------------------------------------------------------------------------
# Subsamples of tensors (the features' statistics, the sampled distance estimate).

# Statistics come from a subsample of at most this many elements per tensor
# (all of them for smaller tensors): SAMPLE_BLOCKS contiguous blocks, evenly
# spaced, so that the sample costs a few hundred cache lines rather than one
# per element. The only full pass over a gradient is the plain sum of
# :func:`gradients_finite`, the finiteness check. (On XLA:CPU a reduction of
# anything but the raw array, e.g. sum(g * g) or sum(|g|), first writes that
# array out: two extra passes over memory.) Defined here, not in
# :mod:`mapa_jax.features` (which re-exports them), because the sampled
# distance estimate below uses them and features imports this module.
SAMPLE_SIZE = 4096
SAMPLE_BLOCKS = 64


def sample(x: Array, n: int) -> Array:
    """A subsample of ``x``: all of it (zero-padded to ``n``) if ``x.size <= n``,
    else ``SAMPLE_BLOCKS`` evenly spaced contiguous blocks of ``n // SAMPLE_BLOCKS``
    elements (one strided slice of a 2-D view; exactly ``n`` elements when
    ``n`` is a multiple of ``SAMPLE_BLOCKS``)."""
    flat = x.reshape(-1)
    if flat.size <= n:
        return jnp.pad(flat, (0, n - flat.size))
    blocks = min(SAMPLE_BLOCKS, n)
    length = n // blocks
    rows = flat.size // length
    view = flat[: rows * length].reshape(rows, length)
    picked = view[:: rows // blocks][:blocks].reshape(-1)
    return jnp.pad(picked, (0, n - picked.shape[0]))


def _sampled_count(size: int, n: int) -> int:
    """How many of a tensor's ``size`` elements :func:`sample` ``(x, n)`` holds (the rest is padding)."""
    if size <= n:
        return size
    blocks = min(SAMPLE_BLOCKS, n)
    return blocks * (n // blocks)


def _distance_sample(x: Array, n: int) -> Array:
    """What the sampled distance estimate keeps of ``x``: all of it, as it is, if
    ``x.size <= n``, else the elements of :func:`sample` ``(x, n)`` (1-D, without padding)."""
    if x.size <= n:
        return x
    return sample(x, n)[: _sampled_count(x.size, n)]


# --------------------------------------------------------------------------
# A Prodigy-style distance estimate (the "distance" parameterization's base step).

#: Prodigy's initial distance estimate ``d_0`` (``optax.contrib.prodigy``'s ``estim_lr0``).
DISTANCE_D0 = 1e-6


class DistanceState(NamedTuple):
    """State of :func:`distance_direction`.

    Attributes:
      params0: the parameters at ``init`` (a tree shaped like params). With a
        sample size ``n > 0`` (:func:`init_distance_state`), a tree of the same
        structure in which a tensor of at most ``n`` elements is kept whole
        (as with ``n = 0``) and a larger one as the 1-D array of the elements
        of its subsample (:func:`sample`, without padding: ``n`` of them, or
        ``SAMPLE_BLOCKS * (n // SAMPLE_BLOCKS)`` when ``n`` is not a multiple
        of ``SAMPLE_BLOCKS``), in the params' dtype.
      grad_sum: Prodigy's weighted gradient sum ``s`` (shaped like ``params0``).
      d: the distance estimate (a scalar in the params' compute dtype, float32
        or wider; starts at :data:`DISTANCE_D0` and never decreases).
      numerator: Prodigy's weighted sum ``r`` of ``<g, x_0 - x>`` (a scalar, the same dtype).
    """

    params0: Any
    grad_sum: Any
    d: Array
    numerator: Array


def _check_count(value: Any, name: str, zero: str, where: str) -> None:
    """``value`` is an integer >= 0 (``zero`` says what 0 means), else a ValueError naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{where}: {name} must be an integer >= 0 (0: {zero}), got {value!r}.")


def init_distance_state(params: Any, sample_size: int = 0) -> DistanceState:
    """The :class:`DistanceState` before the first step.

    ``sample_size``: 0 keeps the whole initial parameters and gradient sum
    (the exact estimate); ``n > 0`` keeps at most ``n`` elements of each
    tensor (see :func:`distance_direction`).
    """
    _check_count(sample_size, "sample_size", "the exact estimate", "init_distance_state")
    dtype = compute_dtype(jnp.result_type(*jax.tree.leaves(params)))
    if sample_size:
        params0 = jax.tree.map(lambda p: jnp.copy(_distance_sample(p, sample_size)), params)
    else:
        params0 = jax.tree.map(jnp.copy, params)
    return DistanceState(
        params0=params0,
        grad_sum=optax.tree.zeros_like(params0),
        d=jnp.asarray(DISTANCE_D0, dtype),
        numerator=jnp.zeros([], dtype),
    )


def _check_distance_state(dist: DistanceState, params: Any, sample_size: int) -> None:
    """Trace time: the sampled state's leaves have the sizes of ``sample_size``'s subsamples."""
    for (path, p), p0, s in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(dist.params0),
                                jax.tree.leaves(dist.grad_sum)):
        size = int(np.prod(p.shape))
        expected = p.shape if not sample_size or size <= sample_size else (_sampled_count(size, sample_size),)
        if p0.shape != expected or s.shape != expected:
            raise ValueError(
                f"distance_direction: the DistanceState at {_path(path)} has shape {p0.shape}, expected "
                f"{expected} for sample_size={sample_size} (a state made with another sample size?)."
            )


def _scaled_sum(terms: list, scales: Optional[list], dtype: Any) -> Array:
    if scales is None:
        return sum(t.astype(dtype) for t in terms)
    # A scale of 1 (a tensor sampled whole) is left out: then every tensor is exact
    # and the sum is the exact estimate's, bit for bit.
    return sum(t.astype(dtype) if c == 1 else c * t.astype(dtype) for c, t in zip(scales, terms))


def distance_direction(
    updates: optax.Updates,
    params: optax.Params,
    mu: Any,
    nu: Any,
    dist: DistanceState,
    count: Array,
    *,
    b1: float,
    b2: float,
    eps: float,
    keep: Optional[Array] = None,
    sample_size: int = 0,
    growth_steps: int = 0,
) -> tuple[Any, Any, DistanceState, Array, Any, Any]:
    r"""Prodigy's distance estimate and its ``d``-weighted Adam direction.

    With ``t`` this step's number, ``b_3 = \sqrt{b_2}``, ``d`` the stored
    estimate and ``c_t = \sqrt{1 - b_2^t} / (1 - b_1^t)``:

    .. math::
        m = b_1 m + (1 - b_1) d g, \quad v = b_2 v + (1 - b_2) d^2 g^2, \quad
        r = b_3 r + \frac{d}{d_0} d c_t \langle g, x_0 - x \rangle, \quad
        s = b_3 s + \frac{d}{d_0} d c_t g, \quad
        d' = \max(d, r / \|s\|_1)

    and the step is ``-f * d c_t * m / (sqrt(v) + d' eps)`` for a factor ``f``
    (1: exactly ``optax.contrib.prodigy()``'s step; MAPA's learned factor
    otherwise). The moments carry a factor ``d``, so they are returned
    divided by it: ``m / d`` and ``(sqrt(v) + d' eps) / d`` are of the
    gradients' scale, as Adam's ``m_hat`` and preconditioner are, and the
    prox step in Adam's metric is ``f * d c_t`` over the second (a prox
    step of ``f * d c_t / (sqrt(v) + d' eps)`` would be ``1 / d`` times too
    large: 1e6 at the start). The estimate is not differentiated through
    (``lax.stop_gradient``): it is a statistic of the trajectory.

    With ``sample_size = n > 0`` the sums ``<g, x_0 - x>`` and ``\|s\|_1``
    are estimated from the subsample of each tensor (:func:`sample`, at most
    ``n`` elements, the same positions every step, kept in ``dist``): a
    tensor of ``N`` elements of which ``k`` are sampled contributes ``N / k``
    times its sampled sum, so that tensors weigh as in the full sums. A
    tensor of at most ``n`` elements is exact (``k = N``). This is an
    approximation of Prodigy's ``d`` (of a ratio of two estimated sums) that
    costs ``O(n)`` per tensor per step instead of a pass over every
    parameter, and keeps ``2 n`` floats per tensor instead of two per
    parameter.

    Args:
      updates: the gradients ``g``. params: the current parameters ``x``.
      mu, nu: the stored moments (trees shaped like params).
      dist: the stored :class:`DistanceState`.
      count: the number ``t >= 1`` of this step.
      b1, b2, eps: as in :func:`adam_direction`.
      keep: optional boolean scalar; where False every state stays as stored.
      sample_size: 0 (the exact estimate) or the ``n`` of a sampled one; must
        be the one ``dist`` was made with (:func:`init_distance_state`).
      growth_steps: ``d' = d`` at steps ``t > growth_steps`` when positive
        (the sums ``r`` and ``s`` go on as before); 0: no limit (Prodigy).

    Returns:
      ``(mu, nu, dist, base, numer, denom)``: the new moments and distance
      state, the base step ``d c_t`` (a scalar), the direction's numerator
      ``m / d`` and preconditioner ``(sqrt(v) + d' eps) / d`` (trees in the
      compute dtype).
    """

    b3 = float(np.sqrt(b2))
    dtype = dist.d.dtype
    t = count.astype(dtype)
    d = jax.lax.stop_gradient(dist.d)
    base = d * jnp.sqrt(1.0 - b2**t) / (1.0 - b1**t)
    _check_count(sample_size, "sample_size", "the exact estimate", "distance_direction")
    _check_count(growth_steps, "growth_steps", "no limit", "distance_direction")
    _check_distance_state(dist, params, sample_size)
    if sample_size:  # each tensor's subsample, and the factor N / k of its sampled sums
        pick = lambda x: _distance_sample(x, sample_size)  # noqa: E731
        scales = [float(x.size) / _sampled_count(x.size, sample_size) for x in jax.tree.leaves(params)]
    else:
        pick, scales = (lambda x: x), None
    g32 = jax.tree.map(lambda g: jax.lax.stop_gradient(as_compute_dtype(pick(g))), updates)
    diff = jax.tree.map(lambda p0, p: as_compute_dtype(p0) - jax.lax.stop_gradient(as_compute_dtype(pick(p))),
                        dist.params0, params)
    inner = _scaled_sum([jnp.vdot(g, x) for g, x in zip(jax.tree.leaves(g32), jax.tree.leaves(diff))], scales, dtype)
    weight = (d / DISTANCE_D0) * base
    numerator = b3 * dist.numerator + weight * inner
    grad_sum = jax.tree.map(lambda s, g: (b3 * as_compute_dtype(s) + weight * g).astype(s.dtype), dist.grad_sum, g32)
    l1 = _scaled_sum([jnp.sum(jnp.abs(as_compute_dtype(s))) for s in jax.tree.leaves(grad_sum)], scales, dtype)
    estimate = jnp.where(l1 > 0, numerator / jnp.where(l1 > 0, l1, 1.0), 0.0)
    d_new = jnp.maximum(d, estimate)
    if growth_steps:
        d_new = jnp.where(count > growth_steps, d, d_new)
    # params0 never changes: selected, it would be read and written every step.
    grad_sum, d_new, numerator = _select(keep, (grad_sum, d_new, numerator), (dist.grad_sum, dist.d, dist.numerator))
    dist = DistanceState(dist.params0, grad_sum, d_new, numerator)
    dg = jax.tree.map(lambda g: d * as_compute_dtype(g), updates)
    mu = _select(keep, update_moment(dg, mu, b1, 1), mu)
    nu = _select(keep, update_moment(dg, nu, b2, 2), nu)
    numer = jax.tree.map(lambda m: as_compute_dtype(m) / d, mu)
    denom = jax.tree.map(lambda v: (jnp.sqrt(jnp.maximum(as_compute_dtype(v), 1e-30)) + dist.d * eps) / d, nu)
    return mu, nu, dist, base, numer, denom
