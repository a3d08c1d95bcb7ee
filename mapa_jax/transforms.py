"""Fixed-parameter proximal optimizers as optax transforms.

Each factory returns an :class:`optax.GradientTransformationExtraArgs`:

* :func:`proximal_gradient`: proximal gradient descent (PGD),
  ``p <- prox_{lr h}(p - lr g)``;
* :func:`prox_adam` and :func:`prox_rmsprop`: an adaptive step followed by a
  per-coordinate prox in the preconditioner's metric (ProxGen; Yun, Lozano and
  Yang, NeurIPS 2021): with ``d = sqrt(v_hat) + eps`` the L1 threshold of
  coordinate ``i`` is ``lr * l1 / d_i``;
* :func:`prox_step`: a prox as the last link of any optax chain, returning
  ``prox(p + u) - p``.

The penalty is the elastic net ``h(p) = l1 ||p||_1 + l2/2 ||p||^2`` by default
(:func:`mapa_jax.prox.elastic_net`); ``prox(x, step)`` overrides it, where
``step`` is the step size of the prox (a scalar for PGD, an array shaped like
``x`` for the preconditioned methods), e.g.
``prox=lambda x, step: mj.prox.huber_shrinkage(x, tau, lam, eta=step)``.

``mask`` selects the tensors the prox applies to, as in ``optax.masked``: a
pytree of bools shaped like params, or a callable on params returning one. The
default applies the prox to weight tensors (``ndim >= 2``) and not to biases or
normalization scales. Unmasked tensors take the plain (preconditioned) step.
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
    "ProximalGradientState",
    "ProxAdamState",
    "ProxRMSPropState",
    "ProxStepState",
    "proximal_gradient",
    "prox_adam",
    "prox_rmsprop",
    "prox_step",
    "default_mask",
]


class ProximalGradientState(NamedTuple):
    """State of :func:`proximal_gradient`: the step count (for schedules)."""

    count: Array


class ProxStepState(NamedTuple):
    """State of :func:`prox_step`: the step count (for schedules)."""

    count: Array


class ProxAdamState(NamedTuple):
    """State of :func:`prox_adam`: step count, first and second moments."""

    count: Array
    mu: optax.Updates
    nu: optax.Updates


class ProxRMSPropState(NamedTuple):
    """State of :func:`prox_rmsprop`: step count and second moment."""

    count: Array
    nu: optax.Updates


# --------------------------------------------------------------------------
# Validation shared by the transforms (and by mapa_jax.mapa).


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


def resolve_mask(mask: MaskOrFn, params: optax.Params, where: str) -> list[bool]:
    """Returns one Python bool per leaf of params (True: apply the prox)."""
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


def _learning_rate(learning_rate: Any, count: Array) -> Array:
    return learning_rate(count) if callable(learning_rate) else learning_rate


def proximal_updates(
    moves: optax.Updates,
    params: optax.Params,
    steps: Any,
    mask: list[bool],
    prox: Optional[ProxFn],
) -> optax.Updates:
    """Updates ``prox(p + u, step) - p`` on masked leaves and ``u`` elsewhere.

    ``moves`` holds the plain updates ``u``. ``steps`` is what ``prox``
    receives besides the point: one value for all leaves, a tree shaped like
    params (e.g. per-coordinate steps of a preconditioned method), or a list
    with one entry per leaf (any object, e.g. a tuple of per-tensor
    parameters). Arithmetic runs in float32 or wider; results have the
    param's dtype. ``prox=None`` returns the moves (in the params' dtypes).
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
            ct = jnp.promote_types(p.dtype, jnp.float32)
            pf = p.astype(ct)
            u = prox(pf + u.astype(ct), step).astype(ct) - pf
        out.append(u.astype(p.dtype))
    return treedef.unflatten(out)


# --------------------------------------------------------------------------
# The optimizers.


def proximal_gradient(
    learning_rate: optax.ScalarOrSchedule,
    *,
    l1: float = 0.0,
    l2: float = 0.0,
    prox: Optional[ProxFn] = None,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Proximal gradient descent (paper Eq. 3).

    .. math:: p_{t+1} = \mathrm{prox}_{\eta_t h}(p_t - \eta_t \nabla g(p_t))

    with ``h`` the elastic net ``l1 ||p||_1 + l2/2 ||p||^2`` unless ``prox`` is
    given. With ``l1 = l2 = 0`` and no ``prox`` this is plain SGD.

    Args:
      learning_rate: step size ``eta >= 0`` or an optax schedule of the step count.
      l1: L1 strength of the default elastic-net penalty.
      l2: L2 strength of the default elastic-net penalty.
      prox: ``prox(x, step) -> array``, the prox of ``step * h``; replaces the
        elastic net.
      mask: which tensors get the prox (pytree of bools or callable on params);
        default: tensors with ``ndim >= 2``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` needs params.
    """
    return _scheduled_prox("proximal_gradient", ProximalGradientState, learning_rate, l1, l2, prox, mask,
                           gradient_step=True)


def _scheduled_prox(
    where: str,
    state_cls: type,
    learning_rate: optax.ScalarOrSchedule,
    l1: Any,
    l2: Any,
    prox: Optional[ProxFn],
    mask: MaskOrFn,
    *,
    gradient_step: bool,
) -> optax.GradientTransformationExtraArgs:
    """PGD (``gradient_step``: the move is ``-lr * g``) or a prox after any update (the move is ``u``)."""
    check_learning_rate(learning_rate, where)
    prox_fn = make_prox(prox, l1, l2, where)

    def init_fn(params: optax.Params):
        del params
        return state_cls(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        check_params(updates, params, where)
        lr = _learning_rate(learning_rate, state.count)
        moves = jax.tree.map(lambda g: -lr * as_compute_dtype(g), updates) if gradient_step else updates
        out = proximal_updates(moves, params, lr, resolve_mask(mask, params, where), prox_fn)
        return out, state_cls(count=optax.safe_increment(state.count))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def prox_step(
    learning_rate: optax.ScalarOrSchedule,
    *,
    l1: float = 0.0,
    l2: float = 0.0,
    prox: Optional[ProxFn] = None,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    """A prox as the last link of an optax chain: returns ``prox(p + u, lr) - p``.

    Example::

        tx = optax.chain(optax.adam(1e-3), mj.prox_step(1e-3, l1=1e-4))

    ``learning_rate`` is the step size of the prox (the penalty is scaled by it,
    as in PGD); give it the same value or schedule as the step before it.

    Args:
      learning_rate: prox step size ``>= 0`` or an optax schedule.
      l1, l2, prox, mask: as in :func:`proximal_gradient`.
    """
    return _scheduled_prox("prox_step", ProxStepState, learning_rate, l1, l2, prox, mask, gradient_step=False)


def _zeros_like_f(params: optax.Params) -> optax.Updates:
    return jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.result_type(p)), params)


def as_compute_dtype(x: Array) -> Array:
    """x in float32, or wider if it already is."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def preconditioner(nu: Array, bias_correction: Any, eps: float) -> Array:
    """``sqrt(nu / bias_correction) + eps`` in float32, with a gradient that is
    finite where ``nu = 0`` (a coordinate whose gradients were all zero): the
    square root's argument is floored at 1e-30, which changes values by at most
    1e-15 and makes the derivative there zero instead of infinite."""
    return jnp.sqrt(jnp.maximum(as_compute_dtype(nu) / bias_correction, 1e-30)) + eps


def ema_moment(new: Array, old: Array, decay: float, power: int) -> Array:
    """Exponential moving average of g**power in float32, stored in old's dtype."""
    return (decay * as_compute_dtype(old) + (1.0 - decay) * as_compute_dtype(new) ** power).astype(old.dtype)


def _check_decay(name: str, value: float, where: str) -> None:
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{where}: {name} must be in [0, 1), got {value}.")


def prox_adam(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    l1: float = 0.0,
    l2: float = 0.0,
    prox: Optional[ProxFn] = None,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Proximal Adam (ProxGen form): Adam's step, then a prox in Adam's metric.

    With bias-corrected moments ``m_hat, v_hat`` and ``d = sqrt(v_hat) + eps``:

    .. math::
        p_{t+1} = \mathrm{argmin}_y\ \frac{1}{2\eta}\|y - z\|_{D}^2 + h(y),
        \quad z = p_t - \eta\, \hat m / d,\ D = \mathrm{diag}(d)

    which for separable ``h`` is ``prox(z, eta / d)`` per coordinate: the L1
    threshold of coordinate ``i`` is ``eta * l1 / d_i`` and the L2 shrinkage
    ``1 / (1 + eta * l2 / d_i)``. With ``l1 = l2 = 0`` this is ``optax.adam``.

    Args:
      learning_rate: step size ``>= 0`` or an optax schedule.
      b1, b2: moment decay rates in ``[0, 1)``.
      eps: added to ``sqrt(v_hat)``, ``> 0``.
      l1, l2, prox, mask: as in :func:`proximal_gradient` (``prox`` receives
        the per-coordinate step ``eta / d``, an array shaped like ``x``).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`ProxAdamState`.
    """
    where = "prox_adam"
    check_learning_rate(learning_rate, where)
    _check_decay("b1", b1, where)
    _check_decay("b2", b2, where)
    if not eps > 0:
        raise ValueError(f"{where}: eps must be > 0, got {eps}.")
    prox_fn = make_prox(prox, l1, l2, where)

    def init_fn(params: optax.Params) -> ProxAdamState:
        return ProxAdamState(
            count=jnp.zeros([], jnp.int32), mu=_zeros_like_f(params), nu=_zeros_like_f(params)
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        check_params(updates, params, where)
        mu = jax.tree.map(lambda g, m: ema_moment(g, m, b1, 1), updates, state.mu)
        nu = jax.tree.map(lambda g, v: ema_moment(g, v, b2, 2), updates, state.nu)
        count = optax.safe_increment(state.count)
        t = count.astype(jnp.float32)
        c1, c2 = 1.0 - b1**t, 1.0 - b2**t
        denom = jax.tree.map(lambda v: preconditioner(v, c2, eps), nu)
        lr = _learning_rate(learning_rate, state.count)
        moves = jax.tree.map(lambda m, d: -lr * (as_compute_dtype(m) / c1) / d, mu, denom)
        steps = jax.tree.map(lambda d: lr / d, denom)
        out = proximal_updates(moves, params, steps, resolve_mask(mask, params, where), prox_fn)
        return out, ProxAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def prox_rmsprop(
    learning_rate: optax.ScalarOrSchedule,
    *,
    decay: float = 0.9,
    eps: float = 1e-8,
    l1: float = 0.0,
    l2: float = 0.0,
    prox: Optional[ProxFn] = None,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Proximal RMSProp (ProxGen form): RMSProp's step, then a prox in its metric.

    With ``v <- decay v + (1 - decay) g^2`` (no bias correction, as RMSProp) and
    ``d = sqrt(v) + eps``: ``p <- prox(p - eta g / d, eta / d)`` per coordinate.

    Note: optax's ``rmsprop`` puts ``eps`` inside the square root; here it is
    outside, as in ProxGen, so that the prox step ``eta / d`` is bounded by
    ``eta / eps``.

    Args:
      learning_rate: step size ``>= 0`` or an optax schedule.
      decay: decay rate of the second moment, in ``[0, 1)``.
      eps: added to ``sqrt(v)``, ``> 0``.
      l1, l2, prox, mask: as in :func:`prox_adam`.
    """
    where = "prox_rmsprop"
    check_learning_rate(learning_rate, where)
    _check_decay("decay", decay, where)
    if not eps > 0:
        raise ValueError(f"{where}: eps must be > 0, got {eps}.")
    prox_fn = make_prox(prox, l1, l2, where)

    def init_fn(params: optax.Params) -> ProxRMSPropState:
        return ProxRMSPropState(count=jnp.zeros([], jnp.int32), nu=_zeros_like_f(params))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        check_params(updates, params, where)
        nu = jax.tree.map(lambda g, v: ema_moment(g, v, decay, 2), updates, state.nu)
        denom = jax.tree.map(lambda v: preconditioner(v, 1.0, eps), nu)
        lr = _learning_rate(learning_rate, state.count)
        moves = jax.tree.map(lambda g, d: -lr * as_compute_dtype(g) / d, updates, denom)
        steps = jax.tree.map(lambda d: lr / d, denom)
        out = proximal_updates(moves, params, steps, resolve_mask(mask, params, where), prox_fn)
        return out, ProxRMSPropState(count=optax.safe_increment(state.count), nu=nu)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
