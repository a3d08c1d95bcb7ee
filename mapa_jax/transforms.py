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

The step they share with :func:`mapa_jax.mapa` (the prox round trip, Adam's
direction, the compute dtype and the checks) is :mod:`mapa_jax.proximal_update`.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

# The shared kernel and its checks live in mapa_jax.proximal_update; the names
# are re-exported here, where they were defined before.
from mapa_jax.proximal_update import (  # noqa: F401
    MaskOrFn,
    ProxFn,
    adam_direction,
    as_compute_dtype,
    check_learning_rate,
    check_params,
    check_state_matches,
    check_state_type,
    compute_dtype,
    default_mask,
    make_prox,
    preconditioner,
    proximal_updates,
    resolve_mask,
    update_moment,
)

Array = jax.Array

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
# The optimizers.


def _learning_rate(learning_rate: Any, count: Array) -> Array:
    return learning_rate(count) if callable(learning_rate) else learning_rate


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


def _is_real(value: Any) -> bool:
    """A real Python or numpy number (not a bool, not a string)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _check_decay(name: str, value: float, where: str) -> None:
    """A decay rate must be a real number in ``[0, 1)`` (``TypeError`` / ``ValueError`` otherwise)."""
    if not _is_real(value):
        raise TypeError(f"{where}: {name} must be a number in [0, 1), got {type(value).__name__} {value!r}.")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{where}: {name} must be in [0, 1), got {value}.")


def _check_eps(eps: float, where: str) -> None:
    """``eps`` must be a real number ``> 0`` (``TypeError`` / ``ValueError`` otherwise)."""
    if not _is_real(eps):
        raise TypeError(f"{where}: eps must be a number > 0, got {type(eps).__name__} {eps!r}.")
    if not eps > 0:
        raise ValueError(f"{where}: eps must be > 0, got {eps}.")


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

    Raises:
      TypeError: a hyperparameter that is not a number (e.g. the string
        ``"1e-3"``); ``update``: a state that is not the
        :class:`ProxAdamState` ``init`` returned, integer params.
      ValueError: a hyperparameter out of range; ``update``: no params,
        gradients shaped unlike them, or a state built for other params
        (``state.mu`` of another tree structure or other shapes).
    """
    where = "prox_adam"
    check_learning_rate(learning_rate, where)
    _check_decay("b1", b1, where)
    _check_decay("b2", b2, where)
    _check_eps(eps, where)
    prox_fn = make_prox(prox, l1, l2, where)

    def init_fn(params: optax.Params) -> ProxAdamState:
        return ProxAdamState(
            count=jnp.zeros([], jnp.int32), mu=optax.tree.zeros_like(params), nu=optax.tree.zeros_like(params)
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        check_params(updates, params, where)
        check_state_type(state, ProxAdamState, f"{where}.update")
        check_state_matches(state.mu, params, f"{where}.update", "state.mu")
        count = optax.safe_increment(state.count)
        mu, nu, m_hat, denom = adam_direction(updates, state.mu, state.nu, count, b1=b1, b2=b2, eps=eps)
        lr = _learning_rate(learning_rate, state.count)
        moves = jax.tree.map(lambda m, d: -lr * m / d, m_hat, denom)
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

    Raises:
      TypeError, ValueError: as :func:`prox_adam` (the state's ``nu`` is
        checked against the params).
    """
    where = "prox_rmsprop"
    check_learning_rate(learning_rate, where)
    _check_decay("decay", decay, where)
    _check_eps(eps, where)
    prox_fn = make_prox(prox, l1, l2, where)

    def init_fn(params: optax.Params) -> ProxRMSPropState:
        return ProxRMSPropState(count=jnp.zeros([], jnp.int32), nu=optax.tree.zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        check_params(updates, params, where)
        check_state_type(state, ProxRMSPropState, f"{where}.update")
        check_state_matches(state.nu, params, f"{where}.update", "state.nu")
        nu = update_moment(updates, state.nu, decay, 2)
        denom = jax.tree.map(lambda v: preconditioner(as_compute_dtype(v), eps), nu)
        lr = _learning_rate(learning_rate, state.count)
        moves = jax.tree.map(lambda g, d: -lr * as_compute_dtype(g) / d, updates, denom)
        steps = jax.tree.map(lambda d: lr / d, denom)
        out = proximal_updates(moves, params, steps, resolve_mask(mask, params, where), prox_fn)
        return out, ProxRMSPropState(count=optax.safe_increment(state.count), nu=nu)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
