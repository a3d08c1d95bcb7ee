r"""Sharpness of a minimum: projected gradient ascent (PGA) on the loss within an L2 ball.

.. math::
    S_r(\theta) = \max_{\|\epsilon\|_2 \le r} L(\theta + \epsilon) - L(\theta)

with the norm over all parameters together (the whole pytree as one vector).
It is estimated by ``steps`` iterations of normalized gradient ascent,
each projected back onto the ball:

.. math::
    \epsilon \leftarrow \Pi_r\left(\epsilon + \alpha\, r\,
    \frac{\nabla L(\theta + \epsilon)}{\|\nabla L(\theta + \epsilon)\|_2}\right),
    \qquad \Pi_r(x) = x \min\left(1, \frac{r}{\|x\|_2}\right),

from a random point on the sphere of radius ``r`` (at a minimum the gradient
at ``epsilon = 0`` vanishes, and ascent could not start there). The estimate
is the largest loss increase over the iterates, the starting point and
``epsilon = 0`` (which is in the ball), so it is at least 0 and at most the
true maximum: a lower bound on ``S_r``. For a quadratic ``L(x) = x^T A x / 2``
(``A`` positive semi-definite) at ``x = 0`` the iteration is a power
iteration on ``A`` and reaches ``lambda_max r^2 / 2``.

The radii of the learned-regularizer study that motivates it (papers/001:
0.001, 0.005, 0.05 and 0.1) are :data:`RADII`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

__all__ = ["RADII", "check_radius", "pga_sharpness"]

#: The neighbourhood radii at which sharpness is reported.
RADII = (0.001, 0.005, 0.05, 0.1)


def _positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def check_radius(radius: Any, where: str = "pga_sharpness") -> None:
    """A ValueError naming ``where`` unless ``radius`` is a finite number > 0."""
    if not _positive(radius):
        raise ValueError(f"{where}: radius must be a finite number > 0, got {radius!r}.")


def _check(radius: Any, steps: Any, step_fraction: Any) -> None:
    check_radius(radius)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"pga_sharpness: steps must be an integer >= 1, got {steps!r}.")
    if not _positive(step_fraction):
        raise ValueError(f"pga_sharpness: step_fraction must be a finite number > 0, got {step_fraction!r}.")


def pga_sharpness(
    loss_fn: Callable[[Any], jax.Array],
    params: Any,
    radius: float,
    *,
    steps: int = 20,
    step_fraction: float = 1.0,
    key: Optional[jax.Array] = None,
) -> jax.Array:
    """The PGA estimate of ``max_{||eps|| <= radius} loss_fn(params + eps) - loss_fn(params)``.

    See the module docstring for the iteration. Jittable (with ``loss_fn``
    static); the cost is ``steps`` evaluations of ``loss_fn`` with its
    gradient and two without.

    Args:
      loss_fn: ``params -> scalar loss`` (a fixed batch closed over).
      params: a pytree of floating-point arrays (the point whose sharpness is measured).
      radius: ``r``, the ball's radius in the L2 norm over all parameters; > 0.
      steps: ascent iterations, >= 1.
      step_fraction: ``alpha``: each step moves ``alpha * r`` along the
        normalized gradient before the projection (1: the ball's radius).
      key: the random starting direction (default ``jax.random.key(0)``).

    Returns:
      A scalar >= 0 in the loss's dtype.

    Raises:
      ValueError: a radius, steps or step_fraction out of range; params with
        no array or with a non-floating leaf.
    """
    _check(radius, steps, step_fraction)
    leaves = jax.tree.leaves(params)
    if not leaves or not all(jnp.issubdtype(jnp.result_type(x), jnp.floating) for x in leaves):
        raise ValueError("pga_sharpness: params must be a non-empty pytree of floating-point arrays, got leaves "
                         f"of dtypes {[str(jnp.result_type(x)) for x in leaves]}.")
    key = jax.random.key(0) if key is None else key

    def project(eps: Any) -> Any:
        norm = optax.tree.norm(eps)
        return optax.tree.scale(jnp.minimum(1.0, radius / jnp.maximum(norm, 1e-30)), eps)

    def shifted(eps: Any) -> Any:
        return optax.tree.add(params, eps)

    start = optax.tree.random_like(key, params)
    start = optax.tree.scale(radius / jnp.maximum(optax.tree.norm(start), 1e-30), start)
    loss0 = loss_fn(params)
    value_and_grad = jax.value_and_grad(lambda e: loss_fn(shifted(e)))

    def step(carry: tuple[Any, jax.Array], _: None) -> tuple[tuple[Any, jax.Array], None]:
        eps, best = carry
        value, grad = value_and_grad(eps)
        norm = optax.tree.norm(grad)
        scale = jnp.where(norm > 0, step_fraction * radius / jnp.maximum(norm, 1e-30), 0.0)
        return (project(optax.tree.add_scale(eps, scale, grad)), jnp.maximum(best, value)), None

    (eps, best), _ = jax.lax.scan(step, (start, loss0), None, length=steps)
    best = jnp.maximum(best, loss_fn(shifted(eps)))
    return best - loss0
