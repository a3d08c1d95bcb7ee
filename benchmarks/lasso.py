r"""LASSO benchmark: iterations and wall time to reach a relative suboptimality.

Problem (the scaling of scikit-learn's ``Lasso``, so its solver is a cross-check):

.. math::
    F(x) = \frac{1}{2m} \|A x - b\|_2^2 + \lambda \|x\|_1,
    \qquad A \in \mathbb{R}^{m \times n}

Each instance draws ``A`` with i.i.d. N(0, 1) entries, ``x_true`` with
``round(density * n)`` nonzeros (N(0, 1) values at uniformly random positions),
``b = A x_true + noise * N(0, I)`` (``A`` and ``b`` then rounded to float32
values, so the float32 runs and the float64 reference see the same problem) and sets
``lambda = l1_ratio * lambda_max`` with ``lambda_max = ||A^T b||_inf / m``
(the smallest ``lambda`` for which ``x = 0`` is optimal). The smooth part has
gradient ``A^T (A x - b) / m`` and Lipschitz constant ``L = sigma_max(A)^2 / m``.

Methods, each run from ``x = 0`` until ``(F(x) - F*) / |F*| <= tol`` or
``max_iters`` iterations (one jit-compiled ``jax.lax.while_loop``; the
suboptimality is evaluated in the loop at every iterate, see :func:`rel_subopt`):

* ``pgd``: ``mj.proximal_gradient(1 / L, l1=lambda)`` (L computed exactly);
* ``fista_bt``: FISTA with backtracking (Beck and Teboulle 2009), implemented
  here (:func:`fista_method`); it does not know ``L``;
* ``prox_adam``: ``mj.prox_adam(lr, l1=lambda)``, with ``lr`` tuned per
  instance over a grid (the best run is reported; the tuning runs are not
  included in its time).

Safeguarded MAPA (``mj.safeguarded``, the proposals of ``mj.mapa`` taken only
when they shrink the proximal-gradient residual; KM steps of PGD with the exact
``1 / L`` otherwise): ``--safeguard-draws K`` runs it from ``K`` random
meta-param draws (draw ``j`` on instance ``j mod instances``; their scale
blown up 5x, so the proposals are adversarial) and ``--meta-params DIR`` from
a meta-training checkpoint on every instance. It is reported in its own
table against FISTA's iterations on the same instance (the guarantee: it
converges whatever the meta-params; the cost: rejected proposals).

``F*`` comes from float64 reference solves (:func:`reference_solution`): FISTA
to a gradient-mapping norm of ``1e-12`` and scikit-learn's coordinate descent
(``Lasso(alpha=lambda, fit_intercept=False)``, same objective) to a duality gap
of ``1e-13 ||b||^2 / m``; the smaller objective is ``F*`` and the two must agree
to ``1e-9`` relative.

The methods run in float32 unless ``--x64``. The reported final suboptimality
is recomputed in float64 from the returned iterate, and an instance counts as
reached only if that value is ``<= tol``. The in-loop estimate is accurate to
about ``0.3 eps`` (``~4e-8`` in float32, against ``~2e-7`` for evaluating ``F``
and subtracting ``F*``), so the loop stops when it is ``<= tol - eps / 2``: the
float64 check then confirms every stop, at the cost of a few extra iterations.

Usage::

    python benchmarks/lasso.py [--instances 5] [--m 250] [--n 500] [--density 0.1]
                               [--max-iters 20000] [--seed 0] [--safeguard-draws 20]
                               [--meta-params DIR] [--json]

Prints a markdown table and, on the last line of stdout, one JSON object
(``--json`` prints only the JSON).

Reference: A. Beck and M. Teboulle, "A Fast Iterative Shrinkage-Thresholding
Algorithm for Linear Inverse Problems", SIAM J. Imaging Sciences 2(1), 2009.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import sys
import time
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mapa_jax as mj

Array = jax.Array

DEFAULT_TOL = 1e-6
DEFAULT_ADAM_LRS = (1.0, 3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3)
# Reference solves (float64).
REF_GRAD_MAP_TOL = 1e-12
REF_MAX_ITERS = 200_000
REF_SKLEARN_TOL = 1e-13
REF_AGREEMENT = 1e-9
# The in-loop estimate of the relative suboptimality (rel_subopt) is within
# about 0.3 eps of its float64 value on these problems (eps of the run dtype;
# measured on the default and tiny configurations), so the loop stops at
# tol - MONITOR_MARGIN_EPS * eps and the float64 check then confirms the stop.
MONITOR_MARGIN_EPS = 0.5

METHODS = ("pgd", "fista_bt", "prox_adam")


def _prox_everything(params: Any) -> Any:
    """A prox mask that selects every tensor (the default skips 1-D ones)."""
    return jax.tree.map(lambda _: True, params)


# --------------------------------------------------------------------------
# Problem instances.


@dataclasses.dataclass(frozen=True)
class LassoProblem:
    """One LASSO instance, in float64 (numpy)."""

    A: np.ndarray  # (m, n)
    b: np.ndarray  # (m,)
    l1: float  # lambda
    x_true: np.ndarray  # (n,)
    lipschitz: float  # sigma_max(A)^2 / m
    seed: int


def make_problem(
    seed: int,
    m: int = 250,
    n: int = 500,
    density: float = 0.1,
    noise: float = 0.01,
    l1_ratio: float = 0.1,
) -> LassoProblem:
    """Draws one instance (see the module docstring for the distribution)."""
    if m < 1 or n < 1:
        raise ValueError(f"make_problem: need m >= 1 and n >= 1, got m={m}, n={n}.")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"make_problem: density must be in (0, 1], got {density}.")
    if not 0.0 < l1_ratio < 1.0:
        raise ValueError(f"make_problem: l1_ratio must be in (0, 1), got {l1_ratio}.")
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, n))
    x_true = np.zeros(n)
    k = max(1, round(density * n))
    x_true[rng.choice(n, size=k, replace=False)] = rng.standard_normal(k)
    b = A @ x_true + noise * rng.standard_normal(m)
    # Make the data exactly representable in float32, so that runs in float32
    # solve the very problem whose F* is computed in float64.
    A = A.astype(np.float32).astype(np.float64)
    b = b.astype(np.float32).astype(np.float64)
    l1_max = np.max(np.abs(A.T @ b)) / m
    lipschitz = np.linalg.norm(A, 2) ** 2 / m
    return LassoProblem(
        A=A, b=b, l1=float(l1_ratio * l1_max), x_true=x_true, lipschitz=float(lipschitz), seed=seed
    )


def objective(A: Array, b: Array, l1: Any, x: Array) -> Array:
    """``F(x) = ||A x - b||^2 / (2 m) + l1 ||x||_1`` in the dtype of the inputs."""
    r = A @ x - b
    return 0.5 * jnp.vdot(r, r) / A.shape[0] + l1 * jnp.sum(jnp.abs(x))


def objective64(problem: LassoProblem, x: Any) -> float:
    """``F(x)`` in float64 numpy (for verification, independent of JAX's dtype mode)."""
    x = np.asarray(x, dtype=np.float64)
    r = problem.A @ x - problem.b
    return float(0.5 * r @ r / problem.A.shape[0] + problem.l1 * np.abs(x).sum())


# --------------------------------------------------------------------------
# Methods: init(A, b, x0) -> state, step(A, b, state) -> state. Every state
# carries the iterate x, its residual r = A x - b and the number of products
# with A or A^T so far (matvecs).


class Method(NamedTuple):
    init: Callable[[Array, Array, Array], Any]
    step: Callable[[Array, Array, Any], Any]


class OptaxState(NamedTuple):
    x: Array
    r: Array  # A x - b
    matvecs: Array
    opt_state: Any


def optax_method(tx: optax.GradientTransformation) -> Method:
    """A LASSO solver from a proximal optax transform: ``x <- x + tx.update(grad)``.

    The transform must apply the prox of ``l1 ||.||_1`` itself. Two products
    (``A^T r`` and ``A x``) per iteration.
    """

    def init(A, b, x0):
        return OptaxState(x0, A @ x0 - b, jnp.ones([], jnp.int32), tx.init(x0))

    def step(A, b, s):
        g = A.T @ s.r / A.shape[0]
        updates, opt_state = tx.update(g, s.opt_state, s.x)
        x = optax.apply_updates(s.x, updates)
        return OptaxState(x, A @ x - b, s.matvecs + 2, opt_state)

    return Method(init, step)


class SafeguardedMethodState(NamedTuple):
    x: Array
    r: Array  # A x - b
    matvecs: Array
    opt_state: Any


SAFEGUARD_CONFIG = mj.MetaLearnerConfig(direction="adam", lstm_hidden=16, gnn_hidden=8, gnn_rounds=2, window=4)


def safeguarded_method(meta_params: Any, config: mj.MetaLearnerConfig, l1: Any, lipschitz: Any) -> Method:
    """``mj.safeguarded(mj.mapa(meta_params, config), f, step_size=1 / L, l1=l1)`` as a LASSO solver.

    ``matvecs`` counts four products with ``A`` or ``A^T`` per iteration (the
    gradient at ``x``, and ``A y``, ``A^T (A y - b)`` at the proposal) and one
    more when the proposal is rejected (``A x`` at the KM step's point): what
    an implementation that reuses ``A y`` needs (this one recomputes it).
    """

    def make(A, b):
        def smooth(x):
            return 0.5 * jnp.mean(jnp.square(A @ x - b))

        return mj.safeguarded(mj.mapa(meta_params, config), smooth, step_size=1.0 / lipschitz, l1=l1, mask=True)

    def init(A, b, x0):
        return SafeguardedMethodState(x0, A @ x0 - b, jnp.full([], 2, jnp.int32), make(A, b).init(x0))

    def step(A, b, s):
        g = A.T @ s.r / A.shape[0]
        value = 0.5 * jnp.mean(jnp.square(s.r)) + l1 * jnp.sum(jnp.abs(s.x))
        updates, opt_state = make(A, b).update(g, s.opt_state, s.x, value=value)
        x = optax.apply_updates(s.x, updates)
        rejected = (~opt_state.last_accepted).astype(jnp.int32)
        return SafeguardedMethodState(x, A @ x - b, s.matvecs + 4 + rejected, opt_state)

    return Method(init, step)


class FistaState(NamedTuple):
    x: Array  # x_k
    r: Array  # A x_k - b
    y: Array  # y_{k+1}
    ry: Array  # A y_{k+1} - b
    t: Array  # t_{k+1}
    lipschitz: Array  # L_k, the backtracked Lipschitz estimate
    grad_map: Array  # ||G_{L_k}(y_k)|| = L_k ||y_k - x_k||
    matvecs: Array


def fista_method(l1: Any, lipschitz0: Any, eta: float = 2.0, max_backtracks: int = 60) -> Method:
    r"""FISTA with backtracking (Beck and Teboulle 2009, Sec. 4) for the LASSO.

    With ``p_L(y) = soft_threshold(y - grad f(y) / L, l1 / L)``, iteration ``k``:

    1. find the smallest ``i >= 0`` such that ``L = eta^i L_{k-1}`` satisfies
       ``F(p_L(y_k)) <= Q_L(p_L(y_k), y_k)``, where
       ``Q_L(p, y) = f(y) + <p - y, grad f(y)> + L/2 ||p - y||^2 + l1 ||p||_1``;
       set ``L_k = L`` and ``x_k = p_L(y_k)``;
    2. ``t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2``;
    3. ``y_{k+1} = x_k + (t_k - 1) / t_{k+1} (x_k - x_{k-1})``,

    from ``y_1 = x_0``, ``t_1 = 1``. Then
    ``F(x_k) - F* <= 2 eta L ||x_0 - x*||^2 / (k + 1)^2`` (their Theorem 4.4).

    For ``f(x) = ||A x - b||^2 / (2m)``, ``f(p) - f(y) - <grad f(y), p - y>`` is
    exactly ``||A (p - y)||^2 / (2m)``, so the test in step 1 is evaluated as
    ``||r_p - r_y||^2 / m <= L ||p - y||^2`` (``r = A . - b``): the same
    condition without subtracting two nearly equal objective values, which in
    float32 makes the textbook test fail spuriously near the optimum and drives
    ``L`` up. The residual of ``y_{k+1}`` is the same combination of those of
    ``x_k`` and ``x_{k-1}``, so an iteration costs one ``A^T`` product and one
    ``A`` product per backtracking trial.

    Args:
      l1: the L1 strength ``lambda`` (a number or a scalar array, may be traced).
      lipschitz0: initial estimate ``L_0 > 0`` (may be traced); it only grows
        (by ``eta``).
      eta: backtracking factor ``> 1``.
      max_backtracks: cap on trials per iteration (a guard against NaN/inf;
        in exact arithmetic ``L_k <= eta L`` is reached after finitely many).

    Returns:
      A :class:`Method`; its state is a :class:`FistaState`.
    """
    if not eta > 1.0:
        raise ValueError(f"fista_method: eta must be > 1, got {eta}.")

    def init(A, b, x0):
        r = A @ x0 - b
        return FistaState(
            x=x0, r=r, y=x0, ry=r, t=jnp.ones([], x0.dtype),
            lipschitz=jnp.asarray(lipschitz0, x0.dtype),
            grad_map=jnp.asarray(jnp.inf, x0.dtype), matvecs=jnp.ones([], jnp.int32),
        )

    def step(A, b, s):
        m = A.shape[0]
        g = A.T @ s.ry / m

        def trial(lip):
            p = mj.prox.soft_threshold(s.y - g / lip, l1 / lip)
            rp = A @ p - b
            d, ad = p - s.y, rp - s.ry
            ok = jnp.vdot(ad, ad) / m <= lip * jnp.vdot(d, d)
            return p, rp, ok

        def backtrack(c):
            lip, _, _, _, i = c
            lip = eta * lip
            return (lip, *trial(lip), i + 1)

        def not_done(c):
            return (~c[3]) & (c[4] < max_backtracks)

        lip, p, rp, _, trials = jax.lax.while_loop(
            not_done, backtrack, (s.lipschitz, *trial(s.lipschitz), jnp.ones([], jnp.int32))
        )
        t_next = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * s.t * s.t))
        beta = (s.t - 1.0) / t_next
        return FistaState(
            x=p, r=rp, y=p + beta * (p - s.x), ry=rp + beta * (rp - s.r), t=t_next,
            lipschitz=lip, grad_map=lip * jnp.linalg.norm(s.y - p),
            matvecs=s.matvecs + 1 + trials,
        )

    return Method(init, step)


class FistaResult(NamedTuple):
    x: Array
    iters: Array
    grad_map: Array  # ||G_L(y_k)|| at the last iteration; dist(0, dF(x)) <= 2 of it
    lipschitz: Array
    f: Array


def fista(
    A: Array,
    b: Array,
    l1: float,
    *,
    x0: Optional[Array] = None,
    lipschitz0: Optional[float] = None,
    eta: float = 2.0,
    grad_map_tol: float = REF_GRAD_MAP_TOL,
    max_iters: int = REF_MAX_ITERS,
) -> FistaResult:
    """Solves the LASSO with :func:`fista_method` until the gradient mapping is small.

    Stops when ``L_k ||y_k - x_k|| <= grad_map_tol`` (the norm of the gradient
    mapping at ``y_k``; as ``L_k >= L`` once backtracking has settled, the
    point ``x_k`` then has a subgradient of norm at most ``2 grad_map_tol``) or
    after ``max_iters`` iterations. Runs in the dtype of ``A`` (enable x64 for
    float64).

    Args:
      A, b: the data; ``F(x) = ||A x - b||^2 / (2m) + l1 ||x||_1``.
      l1: ``lambda >= 0``.
      x0: start (default zeros).
      lipschitz0: initial ``L_0`` (default ``max_j ||A_j||^2 / m``, a lower
        bound on ``L``).
      eta, grad_map_tol, max_iters: see above.
    """
    A = jnp.asarray(A)
    b = jnp.asarray(b, A.dtype)
    x0 = jnp.zeros(A.shape[1], A.dtype) if x0 is None else jnp.asarray(x0, A.dtype)
    if lipschitz0 is None:
        lipschitz0 = float(jnp.max(jnp.sum(A * A, axis=0)) / A.shape[0])
    dt = A.dtype
    return _fista_jit(A, b, x0, jnp.asarray(l1, dt), jnp.asarray(lipschitz0, dt),
                      jnp.asarray(grad_map_tol, dt), float(eta), int(max_iters))


@functools.partial(jax.jit, static_argnames=("eta", "max_iters"))
def _fista_jit(A, b, x0, l1, lipschitz0, grad_map_tol, eta, max_iters):
    method = fista_method(l1, lipschitz0, eta)

    def cond(c):
        k, s = c
        return (k < max_iters) & (s.grad_map > grad_map_tol)

    def body(c):
        k, s = c
        return k + 1, method.step(A, b, s)

    k, s = jax.lax.while_loop(cond, body, (jnp.zeros([], jnp.int32), method.init(A, b, x0)))
    return FistaResult(s.x, k, s.grad_map, s.lipschitz, objective(A, b, l1, s.x))


# --------------------------------------------------------------------------
# The benchmark driver.


class Optimum(NamedTuple):
    """The reference solution, in the dtype of the run, for :func:`rel_subopt`."""

    x: Array  # x*, rounded
    r: Array  # A x* - b (computed in float64), rounded
    offset: Array  # G - F*, G the objective formula at the rounded (x, r) in float64
    scale: Array  # |F*|


def make_optimum(problem: LassoProblem, x_star: np.ndarray, f_star: float, dtype: Any) -> Optimum:
    """Rounds the float64 reference to ``dtype`` and records what the rounding cost."""
    np_dtype = np.dtype(dtype)
    x = np.asarray(x_star, np.float64).astype(np_dtype)
    r = (problem.A @ np.asarray(x_star, np.float64) - problem.b).astype(np_dtype)
    x64, r64 = x.astype(np.float64), r.astype(np.float64)
    g = 0.5 * r64 @ r64 / problem.A.shape[0] + problem.l1 * np.abs(x64).sum()
    return Optimum(jnp.asarray(x), jnp.asarray(r), jnp.asarray(g - f_star, np_dtype),
                   jnp.asarray(abs(f_star), np_dtype))


def rel_subopt(x: Array, r: Array, l1: Any, opt: Optimum) -> Array:
    r"""``(F(x) - F*) / |F*|`` from ``x`` and its residual ``r = A x - b``.

    Evaluated as a sum of differences,
    ``F(x) - F* = sum_i (r_i - r*_i)(r_i + r*_i) / (2m) + l1 sum_i (|x_i| - |x*_i|) + offset``,
    which is exact algebra (``offset`` accounts for rounding ``x*, r*``): every
    term is small near the optimum, so little is lost to rounding. In float32
    its error is about ``1e-8`` (at most ``~4e-8`` measured, the rounding of
    ``r`` itself), where evaluating ``F(x)`` and subtracting ``F*`` loses up to
    ``~2e-7`` (an ulp of ``F`` and of ``F*``), a fifth of a ``1e-6`` tolerance.
    """
    m = r.shape[0]
    smooth = jnp.vdot(r - opt.r, r + opt.r) / (2 * m)
    penalty = l1 * jnp.sum(jnp.abs(x) - jnp.abs(opt.x))
    return (smooth + penalty + opt.offset) / opt.scale


class Trace(NamedTuple):
    x: Array
    iters: Array
    rel_subopt: Array  # at the returned x, in the run dtype
    best_rel_subopt: Array  # min over the iterates, in the run dtype
    matvecs: Array


def run_to_tolerance(
    method: Method, A: Array, b: Array, l1: Any, x0: Array, opt: Optimum, *, tol: float,
    max_iters: int
) -> Trace:
    """Iterates ``method`` until ``(F(x) - F*) / |F*| <= tol`` or ``max_iters`` steps.

    One ``lax.while_loop``; the suboptimality (:func:`rel_subopt`) is evaluated
    at every iterate. Stops early on a non-finite value.
    """

    def rel(s):
        return rel_subopt(s.x, s.r, l1, opt)

    def cond(c):
        k, s, _ = c
        return (k < max_iters) & (rel(s) > tol)  # False on NaN: stop

    def body(c):
        k, s, best = c
        s = method.step(A, b, s)
        return k + 1, s, jnp.minimum(best, rel(s))

    s0 = method.init(A, b, x0)
    k, s, best = jax.lax.while_loop(cond, body, (jnp.zeros([], jnp.int32), s0, rel(s0)))
    return Trace(s.x, k, rel(s), best, s.matvecs)


def loop_tolerance(tol: float, dtype: Any) -> float:
    """The threshold the loop applies to its estimate, so that float64 confirms ``tol``."""
    return tol - MONITOR_MARGIN_EPS * float(jnp.finfo(dtype).eps)


def _runner(make_method: Callable[[Any], Method], l1: float, tol: float, max_iters: int):
    """A jitted ``run(A, b, x0, opt, hyper) -> Trace``; ``hyper`` (a step size) is traced."""

    @jax.jit
    def run(A, b, x0, opt, hyper):
        return run_to_tolerance(make_method(hyper), A, b, l1, x0, opt, tol=tol,
                                max_iters=max_iters)

    return run


def reference_solution(problem: LassoProblem) -> dict:
    """``F*`` from two float64 solvers that must agree (FISTA and sklearn's CD)."""
    from sklearn.linear_model import Lasso

    with jax.enable_x64(True):
        ref = fista(problem.A, problem.b, problem.l1)
        x_fista = np.asarray(ref.x, np.float64)
        grad_map = float(ref.grad_map)
        fista_iters = int(ref.iters)
    cd = Lasso(alpha=problem.l1, fit_intercept=False, tol=REF_SKLEARN_TOL, max_iter=1_000_000,
               selection="cyclic")
    cd.fit(problem.A, problem.b)
    f_fista = objective64(problem, x_fista)
    f_cd = objective64(problem, cd.coef_)
    f_star = min(f_fista, f_cd)
    disagreement = abs(f_fista - f_cd) / abs(f_star)
    if disagreement > REF_AGREEMENT:
        raise RuntimeError(
            f"reference solvers disagree on instance seed={problem.seed}: F(fista)={f_fista!r}, "
            f"F(cd)={f_cd!r}, relative difference {disagreement:.2e} > {REF_AGREEMENT:.0e} "
            f"(fista: {fista_iters} iterations, gradient-mapping norm {grad_map:.1e})."
        )
    return {
        "f_star": f_star,
        "x_star": x_fista if f_fista <= f_cd else np.asarray(cd.coef_, np.float64),
        "f_fista": f_fista,
        "f_cd": f_cd,
        "rel_disagreement": disagreement,
        "fista_iters": fista_iters,
        "fista_grad_map": grad_map,
        "cd_iters": int(cd.n_iter_),
    }


@functools.lru_cache(maxsize=None)
def _safeguarded_runner(config: mj.MetaLearnerConfig, tol: float, max_iters: int):
    """A jitted ``run(A, b, x0, opt, meta_params, l1, lipschitz) -> Trace`` (all traced: one compile)."""

    @jax.jit
    def run(A, b, x0, opt, meta_params, l1, lipschitz):
        method = safeguarded_method(meta_params, config, l1, lipschitz)
        return run_to_tolerance(method, A, b, l1, x0, opt, tol=tol, max_iters=max_iters)

    return run


def run_safeguarded(problem: LassoProblem, f_star: float, x_star: np.ndarray, meta_params: Any,
                    config: mj.MetaLearnerConfig, *, tol: float, max_iters: int, dtype: Any,
                    repeats: int = 1) -> dict:
    """Safeguarded MAPA at ``meta_params`` on one instance: a :func:`_record` row plus acceptances."""
    A, b = jnp.asarray(problem.A, dtype), jnp.asarray(problem.b, dtype)
    x0 = jnp.zeros(problem.A.shape[1], dtype)
    opt = make_optimum(problem, x_star, f_star, dtype)
    run = _safeguarded_runner(config, loop_tolerance(tol, dtype), max_iters)
    args = (A, b, x0, opt, meta_params, jnp.asarray(problem.l1, dtype), jnp.asarray(problem.lipschitz, dtype))
    jax.block_until_ready(run(*args))  # compile + warm-up
    trace, ms = _timed(run, args, repeats)
    # Acceptances: the state is not in the Trace; one more run for them would double the time, so
    # they are read from the matvec count (4 per accepted iteration, 5 per rejected one, 2 at init).
    rejected = int(trace.matvecs) - 2 - 4 * int(trace.iters)
    return _record(problem, f_star, trace, ms, tol, loop_tolerance(tol, dtype),
                   accepted=int(trace.iters) - rejected)


def _timed(run, args: tuple, repeats: int) -> tuple[Trace, float]:
    """Result of ``run(*args)`` and its median wall time in ms over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(run(*args))
        times.append(1e3 * (time.perf_counter() - start))
    return out, float(np.median(times))


def _finite_or_none(v: float) -> Optional[float]:
    return float(v) if np.isfinite(v) else None


def _verify(problem: LassoProblem, f_star: float, trace: Trace, tol: float) -> tuple[bool, float]:
    """Float64 relative suboptimality of the returned iterate, and whether it is <= tol."""
    final = (objective64(problem, trace.x) - f_star) / abs(f_star)
    return bool(np.isfinite(final) and final <= tol), final


def _record(problem: LassoProblem, f_star: float, trace: Trace, ms: float, tol: float,
            loop_tol: float, **extra) -> dict:
    reached, final = _verify(problem, f_star, trace, tol)
    return {
        "reached": reached,
        # Stopped on its in-loop estimate but failed the float64 check (should not happen).
        "unconfirmed_stop": bool(float(trace.rel_subopt) <= loop_tol and not reached),
        "iters": int(trace.iters) if reached else None,
        "iters_run": int(trace.iters),
        "time_ms": ms if reached else None,
        "run_ms": ms,
        "matvecs": int(trace.matvecs) if reached else None,
        "final_rel_subopt": _finite_or_none(final),
        "loop_rel_subopt": _finite_or_none(float(trace.rel_subopt)),
        "best_rel_subopt": _finite_or_none(float(trace.best_rel_subopt)),
        "nnz": int(np.count_nonzero(np.asarray(trace.x))),
        **extra,
    }


def run_instance(problem: LassoProblem, *, tol: float, max_iters: int, dtype: Any,
                 adam_lrs: Sequence[float], repeats: int = 3,
                 safeguard: Sequence[tuple[str, Any, mj.MetaLearnerConfig]] = ()) -> dict:
    """Reference solve, then each method: compile and warm up, then timed runs.

    ``prox_adam`` runs once per learning rate of ``adam_lrs`` (these runs also
    compile and warm it up); the best is then timed. Best: the fewest
    iterations among the runs that reached ``tol``, else the lowest
    suboptimality attained. ``safeguard``: ``(label, meta_params, config)``
    learners run as :func:`run_safeguarded` (rows under ``"safeguarded"``).
    """
    ref = reference_solution(problem)
    f_star = ref["f_star"]
    A = jnp.asarray(problem.A, dtype)
    b = jnp.asarray(problem.b, dtype)
    x0 = jnp.zeros(problem.A.shape[1], dtype)
    opt = make_optimum(problem, ref["x_star"], f_star, dtype)
    l1 = problem.l1
    # FISTA starts its backtracking from a cheap lower bound on L, the largest
    # diagonal entry of A^T A / m; it never sees the exact L. PGD does.
    lipschitz0 = float(np.max(np.sum(problem.A**2, axis=0)) / problem.A.shape[0])
    common = dict(l1=l1, tol=loop_tolerance(tol, dtype), max_iters=max_iters)

    pgd = _runner(lambda lr: optax_method(
        mj.proximal_gradient(lr, l1=l1, mask=_prox_everything)), **common)
    fista_bt = _runner(lambda lip0: fista_method(l1, lip0), **common)
    adam = _runner(lambda lr: optax_method(
        mj.prox_adam(lr, l1=l1, mask=_prox_everything)), **common)

    results = {}
    for name, run, hyper in (("pgd", pgd, 1.0 / problem.lipschitz),
                             ("fista_bt", fista_bt, lipschitz0)):
        args = (A, b, x0, opt, jnp.asarray(hyper, dtype))
        jax.block_until_ready(run(*args))  # compile + warm-up
        trace, ms = _timed(run, args, repeats)
        results[name] = _record(problem, f_star, trace, ms, tol, common["tol"])

    sweep = []
    for lr in adam_lrs:
        trace = jax.block_until_ready(adam(A, b, x0, opt, jnp.asarray(lr, dtype)))
        reached, final = _verify(problem, f_star, trace, tol)
        sweep.append({
            "lr": lr,
            "reached": reached,
            "iters_run": int(trace.iters),
            "final_rel_subopt": _finite_or_none(final),
            "best_rel_subopt": _finite_or_none(float(trace.best_rel_subopt)),
        })

    def rank(entry):
        best = entry["best_rel_subopt"]
        return (not entry["reached"], entry["iters_run"] if entry["reached"] else 0,
                math.inf if best is None else best)

    chosen = min(sweep, key=rank)["lr"]
    trace, ms = _timed(adam, (A, b, x0, opt, jnp.asarray(chosen, dtype)), repeats)
    results["prox_adam"] = _record(problem, f_star, trace, ms, tol, common["tol"], lr=chosen,
                                   lr_sweep=sweep)

    guarded = {label: run_safeguarded(problem, f_star, ref["x_star"], meta, cfg, tol=tol, max_iters=max_iters,
                                      dtype=dtype)
               for label, meta, cfg in safeguard}

    return {
        "seed": problem.seed,
        "l1": l1,
        "lipschitz": problem.lipschitz,
        "f_star": f_star,
        "nnz_star": int(np.count_nonzero(ref["x_star"])),
        "reference": {k: v for k, v in ref.items() if k not in ("x_star", "f_star")},
        "methods": results,
        "safeguarded": guarded,
    }


def _median_or_none(values: Sequence[Optional[float]]) -> Optional[float]:
    """Median with ``None`` (not reached) counted as +inf; ``None`` if the median is."""
    arr = np.array([math.inf if v is None else v for v in values], dtype=np.float64)
    med = float(np.median(arr))
    return med if np.isfinite(med) else None


def summarize(instances: Sequence[dict]) -> dict:
    """Per method: instances reached and medians over instances (unreached = +inf)."""
    out = {}
    for name in METHODS:
        rows = [inst["methods"][name] for inst in instances]
        finals = [r["final_rel_subopt"] for r in rows]
        out[name] = {
            "reached": sum(r["reached"] for r in rows),
            "unconfirmed_stops": sum(r["unconfirmed_stop"] for r in rows),
            "instances": len(rows),
            "median_iters": _median_or_none([r["iters"] for r in rows]),
            "median_time_ms": _median_or_none([r["time_ms"] for r in rows]),
            "median_matvecs": _median_or_none([r["matvecs"] for r in rows]),
            "median_run_ms": float(np.median([r["run_ms"] for r in rows])),
            "median_final_rel_subopt": _median_or_none(finals),
            "median_best_rel_subopt": _median_or_none([r["best_rel_subopt"] for r in rows]),
        }
        if name == "prox_adam":
            out[name]["chosen_lrs"] = [r["lr"] for r in rows]
    return out


def summarize_safeguarded(instances: Sequence[dict]) -> dict:
    """Per learner kind (``random``, ``trained``): runs reached, iterations against FISTA's on the same instance."""
    out = {}
    for kind in ("random", "trained"):
        rows = [(row, inst["methods"]["fista_bt"]) for inst in instances
                for label, row in inst["safeguarded"].items() if label.split("_")[0] == kind]
        if not rows:
            continue
        ratios = [r["iters"] / f["iters"] if r["reached"] and f["reached"] else None for r, f in rows]
        out[kind] = {
            "runs": len(rows),
            "reached": sum(r["reached"] for r, _ in rows),
            "median_iters": _median_or_none([r["iters"] for r, _ in rows]),
            "max_iters": (max(r["iters"] for r, _ in rows) if all(r["reached"] for r, _ in rows) else None),
            "median_iters_over_fista": _median_or_none(ratios),
            "max_iters_over_fista": max(ratios) if all(v is not None for v in ratios) else None,
            "median_time_ms": _median_or_none([r["time_ms"] for r, _ in rows]),
            "median_accepted_fraction": float(np.median([r["accepted"] / max(r["iters_run"], 1) for r, _ in rows])),
        }
    return out


def run_benchmark(*, instances: int = 5, m: int = 250, n: int = 500, density: float = 0.1,
                  noise: float = 0.01, l1_ratio: float = 0.1, max_iters: int = 20_000,
                  seed: int = 0, tol: float = DEFAULT_TOL, x64: bool = False,
                  adam_lrs: Sequence[float] = DEFAULT_ADAM_LRS, repeats: int = 3,
                  safeguard_draws: int = 0, meta_params_dir: Optional[str] = None) -> dict:
    """Runs every method on ``instances`` problems (seeds ``seed, seed+1, ...``).

    ``safeguard_draws`` random meta-param draws of safeguarded MAPA (draw ``j``
    on instance ``j mod instances``) and, with ``meta_params_dir``, the learner
    of that checkpoint on every instance (:func:`run_safeguarded`).
    """
    if instances < 1:
        raise ValueError(f"run_benchmark: instances must be >= 1, got {instances}.")
    if max_iters < 1:
        raise ValueError(f"run_benchmark: max_iters must be >= 1, got {max_iters}.")
    if repeats < 1:
        raise ValueError(f"run_benchmark: repeats must be >= 1, got {repeats}.")
    if safeguard_draws < 0:
        raise ValueError(f"run_benchmark: safeguard_draws must be >= 0, got {safeguard_draws}.")
    trained = None
    if meta_params_dir is not None:
        from mapa_jax.meta.checkpoint import (
            load_meta_params,  # reads arrays and JSON only
        )

        trained = load_meta_params(meta_params_dir)
    config = dict(instances=instances, m=m, n=n, density=density, noise=noise,
                  l1_ratio=l1_ratio, max_iters=max_iters, seed=seed, tol=tol,
                  dtype="float64" if x64 else "float32", adam_lrs=list(adam_lrs),
                  repeats=repeats, safeguard_draws=safeguard_draws, meta_params_dir=meta_params_dir,
                  loop_tol=loop_tolerance(tol, jnp.float64 if x64 else jnp.float32))

    def learners(i: int) -> list[tuple[str, Any, mj.MetaLearnerConfig]]:
        out = []
        for j in range(i, safeguard_draws, instances):  # random meta-params, their scale blown up 5x
            meta = jax.tree.map(lambda w: 5.0 * w, mj.init_meta_params(jax.random.key(j), SAFEGUARD_CONFIG))
            out.append((f"random_{j}", meta, SAFEGUARD_CONFIG))
        if trained is not None:
            out.append(("trained", *trained))
        return out

    def go():
        dtype = jnp.float64 if x64 else jnp.float32
        return [
            run_instance(make_problem(seed + i, m, n, density, noise, l1_ratio), tol=tol,
                         max_iters=max_iters, dtype=dtype, adam_lrs=adam_lrs, repeats=repeats,
                         safeguard=learners(i))
            for i in range(instances)
        ]

    if x64:
        with jax.enable_x64(True):
            per_instance = go()
    else:
        per_instance = go()
    return {
        "benchmark": "lasso",
        "objective": "F(x) = ||A x - b||^2 / (2 m) + l1 ||x||_1; A m x n iid N(0,1); "
                     "l1 = l1_ratio * ||A^T b||_inf / m",
        "criterion": "(F(x) - F*) / |F*| <= tol, checked in float64 at the returned iterate "
                     "(the loop stops when its estimate is <= loop_tol)",
        "config": config,
        "device": str(jax.devices()[0].device_kind),
        "jax_version": jax.__version__,
        "summary": summarize(per_instance),
        "safeguarded_summary": summarize_safeguarded(per_instance),
        "instances": per_instance,
    }


def markdown_table(result: dict) -> str:
    """The summary as a markdown table."""
    cfg = result["config"]
    budget = cfg["max_iters"]
    lines = [
        "| method | reached | median iters | median time ms | final rel. subopt | median matvecs |",
        "|---|---|---|---|---|---|",
    ]
    for name in METHODS:
        s = result["summary"][name]
        iters = f"{s['median_iters']:.0f}" if s["median_iters"] is not None else f">{budget}"
        ms = (f"{s['median_time_ms']:.1f}" if s["median_time_ms"] is not None
              else f">{s['median_run_ms']:.1f}")
        mv = f"{s['median_matvecs']:.0f}" if s["median_matvecs"] is not None else "-"
        final = s["median_final_rel_subopt"]
        label = name
        if name == "prox_adam":
            label += f" (best lr of {len(cfg['adam_lrs'])})"
        lines.append(
            f"| {label} | {s['reached']}/{s['instances']} | {iters} | {ms} | "
            f"{'n/a' if final is None else f'{final:.2e}'} | {mv} |"
        )
    guarded = result.get("safeguarded_summary") or {}
    if guarded:
        lines += ["", "| safeguarded MAPA | reached | median iters | max iters | iters / FISTA's (median, max) "
                  "| accepted proposals | median time ms |", "|---|---|---|---|---|---|---|"]
        for kind, s in guarded.items():
            def fmt(v, spec):
                return "n/a" if v is None else format(v, spec)
            label = f"{kind} meta-params" + (" (5x scale)" if kind == "random" else "")
            lines.append(f"| {label} | {s['reached']}/{s['runs']} | {fmt(s['median_iters'], '.0f')} | "
                         f"{fmt(s['max_iters'], 'd')} | {fmt(s['median_iters_over_fista'], '.2f')}, "
                         f"{fmt(s['max_iters_over_fista'], '.2f')} | {s['median_accepted_fraction']:.0%} | "
                         f"{fmt(s['median_time_ms'], '.1f')} |")
    return "\n".join(lines)


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instances", type=int, default=5)
    p.add_argument("--m", type=int, default=250, help="rows of A (samples)")
    p.add_argument("--n", type=int, default=500, help="columns of A (features)")
    p.add_argument("--density", type=float, default=0.1, help="fraction of nonzeros in x_true")
    p.add_argument("--noise", type=float, default=0.01, help="std of the noise in b")
    p.add_argument("--l1-ratio", type=float, default=0.1, help="l1 / l1_max")
    p.add_argument("--max-iters", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=DEFAULT_TOL, help="relative suboptimality")
    p.add_argument("--adam-lrs", type=lambda s: [float(v) for v in s.split(",")],
                   default=list(DEFAULT_ADAM_LRS), help="comma-separated prox_adam grid")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per method (median)")
    p.add_argument("--x64", action="store_true", help="run the methods in float64")
    p.add_argument("--safeguard-draws", type=int, default=0,
                   help="random meta-param draws of safeguarded MAPA (0: none)")
    p.add_argument("--meta-params", default=None, help="a meta-training checkpoint directory: its learner, "
                   "safeguarded, on every instance")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = _parse(argv)
    result = run_benchmark(
        instances=args.instances, m=args.m, n=args.n, density=args.density, noise=args.noise,
        l1_ratio=args.l1_ratio, max_iters=args.max_iters, seed=args.seed, tol=args.tol,
        x64=args.x64, adam_lrs=args.adam_lrs, repeats=args.repeats,
        safeguard_draws=args.safeguard_draws, meta_params_dir=args.meta_params,
    )
    if not args.json:
        cfg = result["config"]
        print(f"LASSO {cfg['m']}x{cfg['n']}, density {cfg['density']}, "
              f"l1 = {cfg['l1_ratio']} l1_max, tol {cfg['tol']:.0e}, "
              f"{cfg['instances']} instances (seeds {cfg['seed']}..{cfg['seed'] + cfg['instances'] - 1}), "
              f"{cfg['dtype']}, max {cfg['max_iters']} iterations, {result['device']}\n")
        print(markdown_table(result))
        print()
    print(json.dumps(result, allow_nan=False, default=_json_default))
    return result


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


if __name__ == "__main__":
    main(sys.argv[1:])
