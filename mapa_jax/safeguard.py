r"""A safeguarded mode with a convergence guarantee: learned steps where they provably help.

:func:`safeguarded` wraps any optax transformation (typically :func:`mapa_jax.mapa`)
for a composite problem

.. math:: \min_x F(x) = f(x) + h(x)

with ``f`` convex and L-smooth and ``h`` convex with an easy prox (the elastic
net, or the user's). Its fallback is the proximal-gradient operator

.. math:: T(x) = \mathrm{prox}_{\alpha h}(x - \alpha \nabla f(x)),
   \qquad S(x) = \|x - T(x)\|_2

(``S`` is the fixed-point residual: ``S(x) = 0`` iff ``x`` minimizes ``F``).
Each step the wrapped transformation proposes ``y = x_k + a u_k``; the
proposal is taken when it shrinks the residual below the reference ``mu_k``
and does not raise ``F`` above its starting value,

.. math:: S(y) \le (1 - \delta)\, \mu_k \quad\text{and}\quad F(y) \le F(x_0)
   \quad\text{(and both are finite)},

and then ``mu_{k+1} = S(y)``; otherwise the step is the Krasnosel'skii-Mann
(KM) step of ``T``, ``x_{k+1} = x_k + a (T(x_k) - x_k)``, and
``mu_{k+1} = mu_k``. ``mu_0 = S(x_0)``. This is the safeguard of Heaton et
al. ("Safeguarded learned convex optimization", AAAI 2023), with the descent
condition added so that the iterates stay in a sublevel set; L2E (the
seeds' 003 paper) grounds its learned update in the same KM iteration.

Theorem (what converges, and under which assumptions)
    Let ``f`` be convex with an L-Lipschitz gradient, ``h`` proper, closed and
    convex, ``0 < alpha <= 1 / L``, ``0 < a <= 1`` and ``0 < delta < 1``, and let
    ``F`` have a minimizer. Whatever the proposals ``u_k`` are:

    1. ``S(x_k) <= mu_k`` for every ``k``, and ``mu_k`` is non-increasing; at
       the ``j``-th accepted proposal ``mu <= (1 - delta)^j S(x_0)``.
    2. ``F(x_k) <= F(x_0)`` for every ``k``.
    3. ``S(x_k) -> 0``.
    4. If the sublevel set ``{F <= F(x_0)}`` is bounded (e.g. LASSO or L1-
       regularized logistic regression with ``l1 > 0``), every limit point of
       ``x_k`` minimizes ``F``, and ``F(x_k) -> min F``.
    5. If only finitely many proposals are accepted, ``x_k`` converges to a
       minimizer of ``F``.

Proof
    *Nonexpansive facts.* ``T`` is the composition of ``prox_{alpha h}``
    (firmly nonexpansive) and the gradient step ``I - alpha grad f``, which
    is averaged for ``alpha < 2 / L`` (Baillon-Haddad); so ``T`` is averaged,
    in particular nonexpansive, and its fixed points are the minimizers of
    ``F``. For the KM step ``x^+ = x + a (T x - x)``:
    ``x^+ - T x^+ = (1 - a)(x - T x) + (T x - T x^+)``, so
    ``S(x^+) <= (1 - a) S(x) + ||x - x^+|| = (1 - a) S(x) + a S(x) = S(x)``.
    *Descent.* For ``alpha <= 1/L`` the proximal-gradient step decreases
    ``F``: ``F(T x) <= F(x) - ||T x - x||^2 / (2 alpha)`` (the descent lemma
    plus the prox's optimality condition, Beck and Teboulle 2009, Lemma 2.3);
    by convexity ``F(x^+) <= (1 - a) F(x) + a F(T x) <= F(x)``.

    1. By induction: ``S(x_0) = mu_0``. An accepted proposal sets
       ``mu_{k+1} = S(x_{k+1}) <= (1 - delta) mu_k``; a KM step keeps
       ``mu_{k+1} = mu_k >= S(x_k) >= S(x_{k+1})``.
    2. An accepted proposal has ``F(x_{k+1}) <= F(x_0)`` by the test; a KM
       step has ``F(x_{k+1}) <= F(x_k)``.
    3. If infinitely many proposals are accepted, ``mu_k -> 0`` by 1, hence
       ``S(x_k) -> 0``. Otherwise, after the last one the iteration is KM on
       the averaged operator ``T``, which converges to a fixed point
       (Bauschke and Combettes, *Convex Analysis and Monotone Operator Theory
       in Hilbert Spaces*, Thm. 5.15, with relaxations ``a`` times ``T``'s
       averagedness constant), so ``S(x_k) -> 0`` as well (``S`` is
       continuous). This also proves 5.
    4. By 2 the iterates stay in the bounded sublevel set, so limit points
       exist; at one, ``x*``, ``S(x*) = 0`` by 3 and the continuity of ``S``,
       so ``x*`` minimizes ``F``. ``F`` is continuous on the (closed, convex)
       sublevel set for the penalties here (``h`` finite everywhere), so
       every subsequence of ``F(x_k)`` has a further one converging to
       ``min F``: ``F(x_k) -> min F``.

    Nothing is assumed about the proposals: a learner with arbitrary (e.g.
    random) meta-params cannot break convergence; it can only waste the
    evaluations of rejected proposals. The guarantee is for the deterministic
    problem: ``smooth`` must be the full objective's smooth part, not a
    minibatch estimate.

Cost per step: one gradient of ``f`` and one evaluation of ``f`` and ``h`` at
the proposal, two proxes, besides the wrapped transformation's update.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mapa_jax.proximal_update import (
    MaskOrFn,
    ProxFn,
    check_params,
    make_prox,
    proximal_updates,
    resolve_mask,
)

Array = jax.Array

__all__ = ["SafeguardedState", "safeguarded"]


class SafeguardedState(NamedTuple):
    """State of :func:`safeguarded`.

    Attributes:
      inner: the wrapped transformation's state.
      mu: the residual reference ``mu_k`` (``S(x_0)`` at init).
      objective0: ``F(x_0)``, the bound of the descent test.
      count: steps taken.
      accepted: proposals accepted so far.
      last_accepted: whether the last step was the wrapped transformation's.
    """

    inner: Any
    mu: Array
    objective0: Array
    count: Array
    accepted: Array
    last_accepted: Array


def _check_fraction(name: str, value: Any, lo_open: bool, hi_open: bool) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if ok:
        v = float(value)
        ok = math.isfinite(v) and (v > 0 if lo_open else v >= 0) and (v < 1 if hi_open else v <= 1)
    if not ok:
        interval = ("(" if lo_open else "[") + "0, 1" + (")" if hi_open else "]")
        raise ValueError(f"safeguarded: {name} must be a number in {interval}, got {value!r}.")


def _norm(tree: Any) -> Array:
    leaves = jax.tree.leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.result_type(x, jnp.float32)))) for x in leaves))


def safeguarded(
    learned: optax.GradientTransformation,
    smooth: Callable[[optax.Params], Array],
    *,
    step_size: float,
    l1: float = 0.0,
    l2: float = 0.0,
    prox: Optional[ProxFn] = None,
    penalty: Optional[Callable[[optax.Params], Array]] = None,
    mask: MaskOrFn = None,
    delta: float = 0.1,
    relaxation: float = 1.0,
) -> optax.GradientTransformationExtraArgs:
    r"""``learned``'s steps where they pass the safeguard, proximal-gradient KM steps elsewhere.

    The module docstring states the scheme, the theorem (the fixed-point
    residual goes to 0; ``F(x_k) -> min F`` on bounded sublevel sets; what is
    assumed) and its proof.

    Example (LASSO)::

        smooth = lambda x: 0.5 * jnp.mean((A @ x["w"] - b) ** 2)
        lip = np.linalg.norm(A, 2) ** 2 / len(b)
        tx = mj.safeguarded(mj.mapa(meta, cfg), smooth, step_size=1 / lip, l1=lam, mask=True)
        state = tx.init(x)
        for _ in range(steps):
            value, g = jax.value_and_grad(smooth)(x)
            u, state = tx.update(g, state, x, value=value)
            x = optax.apply_updates(x, u)

    Args:
      learned: the transformation whose updates are proposed (its ``update``
        receives the same gradients, params and extra arguments).
      smooth: ``f(params) -> scalar``, the smooth part of the objective (the
        whole problem: deterministic, convex, L-smooth). ``update``'s
        ``grads`` must be ``grad(smooth)(params)``, not gradients of ``F``.
      step_size: ``alpha`` of the proximal-gradient operator, in
        ``(0, 1 / L]`` for the theorem (a traced scalar is accepted, unchecked).
      l1, l2: the elastic-net penalty ``h = l1 ||x||_1 + l2/2 ||x||^2`` on the
        masked tensors (as in :func:`~mapa_jax.proximal_gradient`).
      prox, penalty: instead, the user's ``prox(x, step)`` of ``step * h`` per
        tensor and ``penalty(params) -> h(params)`` (both needed: the test
        evaluates ``F``).
      mask: the tensors ``h`` applies to (pytree of bools, a callable, or
        ``True`` for all; default: tensors with ``ndim >= 2``, as elsewhere).
      delta: the required residual decrease of an accepted proposal, in (0, 1).
      relaxation: ``a`` in (0, 1], the KM relaxation (of proposals too).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state
      :class:`SafeguardedState`; ``init`` evaluates ``f``, its gradient and
      ``h`` at the initial params.

    Raises:
      TypeError: ``learned`` is not an optax transformation; ``smooth`` or
        ``penalty`` is not callable.
      ValueError: no prox (``l1 = l2 = 0`` and no ``prox``: the problem has no
        nonsmooth part to safeguard, use the learned transformation alone or
        give ``h``), ``prox`` without ``penalty`` (or the reverse), or
        ``step_size``, ``delta`` or ``relaxation`` out of range.
    """
    where = "safeguarded"
    if not (hasattr(learned, "init") and hasattr(learned, "update")):
        raise TypeError(f"{where}: learned must be an optax GradientTransformation, got {type(learned).__name__}.")
    if not callable(smooth):
        raise TypeError(f"{where}: smooth must be a callable f(params) -> scalar, got {smooth!r}.")
    if isinstance(step_size, jax.core.Tracer):  # e.g. 1 / L computed under jit: checked by the caller
        if jnp.shape(step_size) != ():
            raise ValueError(f"{where}: step_size must be a scalar, got shape {jnp.shape(step_size)}.")
    else:
        ok = isinstance(step_size, (int, float, np.integer, np.floating, jax.Array)) and not isinstance(
            step_size, (bool, np.bool_)) and jnp.shape(step_size) == ()
        if not (ok and math.isfinite(float(step_size)) and float(step_size) > 0):
            raise ValueError(f"{where}: step_size must be a finite number > 0 (at most 1 / L), got {step_size!r}.")
    _check_fraction("delta", delta, lo_open=True, hi_open=True)
    _check_fraction("relaxation", relaxation, lo_open=True, hi_open=False)
    if (prox is None) != (penalty is None):
        raise ValueError(f"{where}: give prox and penalty together (the prox of h and h itself), or neither "
                         "(the elastic net of l1, l2).")
    if penalty is not None and not callable(penalty):
        raise TypeError(f"{where}: penalty must be a callable h(params) -> scalar, got {penalty!r}.")
    prox_fn = make_prox(prox, l1, l2, where)
    if prox_fn is None:
        raise ValueError(f"{where}: the problem has no prox (l1 = l2 = 0 and no prox=): the safeguard needs the "
                         "nonsmooth part h; give l1, l2 or prox= and penalty=.")
    alpha, a = step_size, float(relaxation)

    def masks(params: Any) -> list[bool]:
        if mask is True:
            return [True] * len(jax.tree.leaves(params))
        return resolve_mask(mask, params, where)

    def h(params: Any) -> Array:
        if penalty is not None:
            return jnp.asarray(penalty(params))
        leaves = jax.tree.leaves(params)
        total = jnp.zeros((), jnp.result_type(*leaves, jnp.float32))
        for x, on in zip(leaves, masks(params)):
            if on:  # the elastic net, whose prox make_prox returned
                total = total + l1 * jnp.sum(jnp.abs(x)) + 0.5 * l2 * jnp.sum(jnp.square(x))
        return total

    def pg_move(grads: Any, params: Any) -> Any:
        """``T(x) - x``, the proximal-gradient move."""
        return proximal_updates(jax.tree.map(lambda g: -alpha * g, grads), params, alpha, masks(params), prox_fn)

    def init_fn(params: optax.Params) -> SafeguardedState:
        value, grads = jax.value_and_grad(smooth)(params)
        f0 = value + h(params)
        return SafeguardedState(
            inner=learned.init(params),
            mu=_norm(pg_move(grads, params)).astype(f0.dtype),
            objective0=f0,
            count=jnp.zeros([], jnp.int32),
            accepted=jnp.zeros([], jnp.int32),
            last_accepted=jnp.zeros([], bool),
        )

    def update_fn(updates: optax.Updates, state: SafeguardedState, params: Optional[optax.Params] = None,
                  **extra_args: Any):
        check_params(updates, params, where)
        if not isinstance(state, SafeguardedState):
            raise TypeError(f"{where}: state must be the SafeguardedState that init returned, "
                            f"got {type(state).__name__}.")
        proposal, inner = learned.update(updates, state.inner, params, **extra_args)
        proposal = jax.tree.map(lambda u: a * u, proposal)
        y = optax.apply_updates(params, proposal)
        fy, gy = jax.value_and_grad(smooth)(y)
        residual = _norm(pg_move(gy, y)).astype(state.mu.dtype)
        objective = (fy + h(y)).astype(state.objective0.dtype)
        accept = (jnp.isfinite(residual) & jnp.isfinite(objective)
                  & (residual <= (1.0 - delta) * state.mu) & (objective <= state.objective0))
        km = jax.tree.map(lambda d: a * d, pg_move(updates, params))
        out = jax.tree.map(lambda p, k: jnp.where(accept, p, k).astype(k.dtype), proposal, km)
        return out, SafeguardedState(
            inner=inner,
            mu=jnp.where(accept, residual, state.mu),
            objective0=state.objective0,
            count=optax.safe_increment(state.count),
            accepted=state.accepted + accept.astype(jnp.int32),
            last_accepted=accept,
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
