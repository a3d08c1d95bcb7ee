"""Proximal operators as pure, elementwise JAX functions.

A proximal operator maps a point ``x`` to

    prox_{h}(x) = argmin_y  1/2 ||y - x||^2 + h(y).

Every function here is elementwise (except :func:`group_lasso`, which acts on a
whole tensor), broadcasts in its parameters, is safe under ``jit``, ``vmap`` and
``grad`` (no ``0/0`` in values or gradients, also in the limits ``tau -> 0`` and
``lam -> 0``), and returns the dtype of ``x``. Low-precision inputs (bfloat16,
float16) are computed in float32 and cast back. A NaN in ``x`` gives a NaN in the
output at that position only.

Parameters that are concrete (Python numbers or arrays outside ``jit``) are
checked: a negative threshold or strength raises ``ValueError``. Traced values
cannot be checked; callers inside ``jit`` are responsible for their range (the
MAPA heads produce positive values by construction).

For projections (indicator functions of convex sets) use
``optax.projections``; :func:`from_projection` adapts one to the
``prox(x, step)`` signature used by the optimizers in :mod:`mapa_jax.transforms`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

__all__ = [
    "smoothed_shrinkage",
    "huber_shrinkage",
    "soft_threshold",
    "elastic_net",
    "group_lasso",
    "from_projection",
]


def _compute_dtype(x: Array) -> jnp.dtype:
    """float32 for low-precision floats, the input dtype otherwise."""
    return jnp.promote_types(x.dtype, jnp.float32)


def _as_float(x: ArrayLike, fn: str) -> Array:
    """``x`` as an array; ``TypeError`` naming ``x`` unless it is a floating-point array."""
    try:
        x = jnp.asarray(x)
    except TypeError as e:  # strings, objects
        raise TypeError(f"{fn}: x must be a floating-point array, got {type(x).__name__} {x!r:.60}.") from e
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{fn}: x must be a floating-point array, got dtype {x.dtype}."
        )
    return x


def check_nonnegative(name: str, value: Any, where: str) -> None:
    """Raises ``ValueError`` if a concrete ``value`` has a negative or NaN entry.

    Traced values (inside ``jit``/``grad``) are not checked.

    Raises:
      TypeError: ``value`` is not a real number or array (a string such as
        ``"1e-3"``, a bool, an object).
      ValueError: it has a negative or NaN entry.
    """
    if value is None or isinstance(value, jax.core.Tracer) or callable(value):
        return
    try:
        raw = np.asarray(value)
        if not (jnp.issubdtype(raw.dtype, jnp.integer) or jnp.issubdtype(raw.dtype, jnp.floating)):
            # strings, bools, objects: not numbers (even where float() would read them)
            raise TypeError(f"dtype {raw.dtype}")
        arr = raw.astype(np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{where}: {name} must be a number or array, got {type(value).__name__} {value!r}.") from e
    if np.any(np.isnan(arr)) or np.any(arr < 0):
        raise ValueError(
            f"{where}: {name} must be >= 0, got {arr if arr.size > 1 else arr.item()}."
        )


def _param(value: ArrayLike, dtype: jnp.dtype) -> Array:
    return jnp.asarray(value, dtype=dtype)


def smoothed_shrinkage(x: ArrayLike, tau: ArrayLike, lam: ArrayLike) -> Array:
    r"""The MAPA paper's "continuous smoothed shrinkage", Eq. 12, exactly as printed.

    .. math::
        S(x) = \begin{cases} x - \lambda\tau\,\mathrm{sign}(x) & |x| > \tau \\
               x / (1 + \lambda(1 - |x|/\tau)) & |x| \le \tau \end{cases}

    Kept for fidelity and ablation. It is **not** what the paper says it is:

    * it is discontinuous at ``|x| = tau``: the inner branch gives ``tau``, the
      outer ``tau * (1 - lam)`` (a jump of ``tau * lam``);
    * on ``|x| < tau`` its derivative is ``(1 + lam) / D**2`` with
      ``D = 1 + lam * (1 - |x|/tau)``, not the paper's Eq. 13;
    * for ``lam > 1`` the outer branch flips the sign of ``x`` just above ``tau``;
    * it is the identity near ``|x| = tau`` and shrinks by ``1/(1+lam)`` near 0.

    It is not the proximal map of any function (a prox is nonexpansive, hence
    continuous). Use :func:`huber_shrinkage` for the corrected operator.

    Args:
      x: input array (floating point).
      tau: threshold, ``>= 0``; broadcasts against ``x``. ``tau = 0`` gives
        ``x - 0 * sign(x) = x`` for ``x != 0`` and ``0`` at ``x = 0``.
      lam: regularization strength, ``>= 0``; broadcasts against ``x``.

    Returns:
      ``S(x)`` with the dtype of ``x``.
    """
    x = _as_float(x, "smoothed_shrinkage")
    check_nonnegative("tau", tau, "smoothed_shrinkage")
    check_nonnegative("lam", lam, "smoothed_shrinkage")
    dt = _compute_dtype(x)
    xf = x.astype(dt)
    tau = _param(tau, dt)
    lam = _param(lam, dt)
    ax = jnp.abs(xf)
    outer = xf - lam * tau * jnp.sign(xf)
    # Inner branch with guarded inputs so the branch not taken cannot produce
    # inf/NaN (whose gradient would leak through jnp.where as NaN): the ratio
    # |x|/tau is clipped to [0, 1] and tau = 0 is replaced by 1 there.
    safe_tau = jnp.where(tau > 0, tau, jnp.ones_like(tau))
    ratio = jnp.minimum(ax, safe_tau) / safe_tau
    inner = xf / (1.0 + lam * (1.0 - ratio))
    return jnp.where(ax > tau, outer, inner).astype(x.dtype)


def huber_shrinkage(
    x: ArrayLike, tau: ArrayLike, lam: ArrayLike, eta: ArrayLike = 1.0
) -> Array:
    r"""The corrected MAPA operator: the exact prox of ``eta * lam * Huber_tau``.

    With the Huber penalty ``H_tau(y) = y**2 / (2 tau)`` for ``|y| <= tau`` and
    ``|y| - tau/2`` beyond, and ``c = eta * lam``:

    .. math::
        S(x) = \mathrm{argmin}_y\ \tfrac12 (y - x)^2 + c\,H_\tau(y)
             = \begin{cases} x / (1 + c/\tau) & |x| \le \tau + c \\
                             x - c\,\mathrm{sign}(x) & |x| > \tau + c \end{cases}

    This keeps the intent of the paper's Eq. 12 (a quadratic zone below a
    threshold, an L1 shift beyond it, ``lam`` the strength, ``tau`` the
    boundary) and, being the prox of a convex function, is continuous, odd,
    monotone and nonexpansive. As ``tau -> 0`` it becomes soft thresholding at
    ``c``; as ``lam -> 0`` the identity.

    Args:
      x: input array (floating point).
      tau: Huber threshold, ``>= 0``; broadcasts against ``x``.
      lam: regularization strength, ``>= 0``; broadcasts against ``x``.
      eta: step size multiplying ``lam`` (the prox of ``eta * h``), ``>= 0``.

    Returns:
      ``S(x)`` with the dtype of ``x``.
    """
    x = _as_float(x, "huber_shrinkage")
    check_nonnegative("tau", tau, "huber_shrinkage")
    check_nonnegative("lam", lam, "huber_shrinkage")
    check_nonnegative("eta", eta, "huber_shrinkage")
    dt = _compute_dtype(x)
    xf = x.astype(dt)
    tau = _param(tau, dt)
    c = _param(eta, dt) * _param(lam, dt)
    # Both branches in one expression, x - r * clip(x, -b, b) with b = tau + c
    # and r = c / b: for |x| <= b it is x (1 - c/b) = x / (1 + c/tau); beyond,
    # x - c sign(x). Cheap (no select, no sign), finite for infinite x, and
    # b = 0 (no penalty, no threshold) gives r = 0, the identity.
    b = tau + c
    positive = b > 0
    r = jnp.where(positive, c / jnp.where(positive, b, 1.0), 0.0)
    return (xf - r * jnp.clip(xf, -b, b)).astype(x.dtype)


def soft_threshold(x: ArrayLike, threshold: ArrayLike) -> Array:
    r"""Soft thresholding, the prox of ``threshold * ||.||_1``.

    .. math:: S(x) = \mathrm{sign}(x) \max(|x| - t, 0)

    Args:
      x: input array (floating point).
      threshold: ``t >= 0``; broadcasts against ``x``.
    """
    x = _as_float(x, "soft_threshold")
    check_nonnegative("threshold", threshold, "soft_threshold")
    dt = _compute_dtype(x)
    xf = x.astype(dt)
    t = _param(threshold, dt)
    return (xf - jnp.clip(xf, -t, t)).astype(x.dtype)  # = sign(x) max(|x| - t, 0)


def elastic_net(x: ArrayLike, l1: ArrayLike, l2: ArrayLike) -> Array:
    r"""Prox of the elastic-net penalty (jaxopt's ``prox_elastic_net`` convention).

    .. math::
        \mathrm{argmin}_y\ \tfrac12 \|x - y\|^2 + l_1 \|y\|_1 + \tfrac{l_2}{2} \|y\|^2
        = \frac{\mathrm{sign}(x) \max(|x| - l_1, 0)}{1 + l_2}

    Args:
      x: input array (floating point).
      l1: L1 strength, ``>= 0``; broadcasts against ``x``.
      l2: L2 strength, ``>= 0``; broadcasts against ``x``.
    """
    x = _as_float(x, "elastic_net")
    check_nonnegative("l1", l1, "elastic_net")
    check_nonnegative("l2", l2, "elastic_net")
    dt = _compute_dtype(x)
    xf = x.astype(dt)
    l1 = _param(l1, dt)
    shrunk = xf - jnp.clip(xf, -l1, l1)  # soft threshold at l1
    return (shrunk / (1.0 + _param(l2, dt))).astype(x.dtype)


def group_lasso(x: ArrayLike, strength: ArrayLike) -> Array:
    r"""Prox of ``strength * ||x||_2`` over the whole tensor (block soft thresholding).

    .. math:: S(x) = x \max(1 - s / \|x\|_2, 0)

    The whole tensor is one group: it is either scaled towards zero or set to
    exactly zero. Apply it per group with ``jax.vmap`` for finer groups.

    Args:
      x: input array (floating point).
      strength: ``s >= 0``, a scalar.
    """
    x = _as_float(x, "group_lasso")
    check_nonnegative("strength", strength, "group_lasso")
    if jnp.ndim(strength) != 0:
        raise ValueError(
            f"group_lasso: strength must be a scalar, got shape {jnp.shape(strength)}."
        )
    dt = _compute_dtype(x)
    xf = x.astype(dt)
    s = _param(strength, dt)
    sq = jnp.sum(xf * xf)
    # Guard ||x|| = 0 so that neither the value nor the gradient is 0/0.
    nonzero = sq > 0
    norm = jnp.sqrt(jnp.where(nonzero, sq, 1.0))
    factor = jnp.where(nonzero & (norm > s), 1.0 - s / norm, 0.0)
    return (xf * factor).astype(x.dtype)


def from_projection(
    projection: Callable[..., Any], *args: Any, **kwargs: Any
) -> Callable[[Array, Any], Array]:
    """Adapts an ``optax.projections`` function to the ``prox(x, step)`` signature.

    The prox of an indicator function is the projection, whatever the step, so
    the step is ignored. Example::

        prox = mj.prox.from_projection(optax.projections.projection_box, 0.0, 1.0)
        tx = mj.proximal_gradient(1e-2, prox=prox)

    Args:
      projection: e.g. ``optax.projections.projection_non_negative``.
      *args, **kwargs: extra arguments passed after ``x`` (e.g. box bounds).
    """

    def prox(x: Array, step: Any) -> Array:
        del step
        return projection(x, *args, **kwargs)

    return prox
