"""Synthetic optimization problems: the M-L2O optimizees and sparse logistic regression.

Following M-L2O (Yang et al., ICLR 2023, Sec. 5.1 and A.6; the shapes and
defaults of its reference code, ``VITA-Group/M-L2O`` ``problems.py``), one task
is a *batch* of ``m`` independent problem instances optimized jointly: the
parameters are ``{"x": (m, d)}`` and the loss is the mean objective over the
instances. The instances (``A``, ``b``) are fixed per task (drawn once from a
fixed seed); ``init(key)`` draws a new starting point.

| task                          | objective per instance                          | distribution of the data                     | x0            | params |
| ----------------------------- | ----------------------------------------------- | -------------------------------------------- | ------------- | ------ |
| ``synthetic/lasso``           | 1/2 ||A x - b||^2 + l1 ||x||_1, l1 = 0.005      | A: mixture of uniforms, each instance U(0, s), s in {0.25, 0.5, 1}; b ~ U(0, 1) | N(0, 0.01^2) | 128 x 10 |
| ``synthetic/lasso_gaussian``  | same                                            | A ~ N(0, sigma^2), sigma = 1; b ~ U(0, 1) (M-L2O's shifted test distribution) | N(0, 0.01^2) | 128 x 10 |
| ``synthetic/quadratic``       | 1/2 ||A x - b||^2                                | A ~ N(0, sigma^2), sigma = 1; b ~ U(-1, 1)   | N(0, 0.01^2)  | 128 x 10 |
| ``synthetic/rosenbrock``      | (1 - u)^2 + 100 (v - u^2)^2, x = (u, v)         | none (M-L2O A.6); optimum (1, 1), value 0   | N(0, 1)       | 128 x 2 |
| ``synthetic/sparse_logreg``   | mean logistic loss + l1 ||w||_1, l1 = 0.02     | X ~ N(0, I_32), w_true 4-sparse N(0, 2^2), y ~ Bernoulli(sigmoid(X w_true)); 1000 rows, 60/20/20 | Dense init | 33 |
| ``synthetic/quadratic_tiny``  | 1/2 ||A x - b||^2 (**for unit tests**)          | A = I + 0.2 N(0, 1/d); b ~ U(-1, 1); m=4, d=5 | N(0, 0.01^2) | 4 x 5 |

M-L2O's printed distribution parameters are not legible in our copy of the
paper, and its reference code uses much larger scales for A (up to U(0, 100));
we keep unit-order scales so that one step-size range suits every task; every
scale is an argument of the builders below.

Rosenbrock is not convex (it is the M-L2O "substantially different" optimizee);
the others are convex composite problems F = g + h with smooth g and
h = l1 * ||.||_1 (h = 0 for the quadratics).

Losses and metrics
    ``loss`` is the full objective F (g plus the L1 term, whose gradient is the
    subgradient ``l1 * sign(x)``). Optimizers that treat h by its prox can use
    ``info["smooth_loss"]`` (g alone), ``info["l1"]`` and ``info["l1_mask"]``
    (which leaves h penalizes). ``evaluate(params, split)`` returns ``loss``
    (F) and ``suboptimality`` (F - F*), plus ``accuracy`` for sparse logistic
    regression. Problems without data are the same on every split; sparse
    logistic regression has one objective per split and F* per split.

Optima (``info["optimum"]`` as params, ``info["min_loss"]`` F* on train)
    quadratics: least squares in float64 (NumPy ``lstsq``); Rosenbrock: (1, 1);
    LASSO: FISTA with adaptive restart in float64, then polished by solving the
    KKT system on the support (and kept only if that verifies the optimality
    conditions); sparse logistic regression: FISTA with restart in float64.
    ``info["kkt_residual"]`` is the proximal-gradient fixed-point residual
    ``||x - prox(x - grad g(x) / L)|| * L`` at the optimum (about 0).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import optax

from mapa_jax.architecture import architecture_graph
from mapa_jax.tasks import models
from mapa_jax.tasks.base import Task
from mapa_jax.tasks.supervised import check_split, count_params

__all__ = ["lasso", "quadratic", "rosenbrock", "sparse_logreg", "quadratic_tiny", "fista"]

Array = jax.Array


# ----------------------------------------------------------------- float64 solvers


def _soft(x: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    return np.sign(x) * np.maximum(np.abs(x) - t, 0.0)


def fista(grad: Callable[[np.ndarray], np.ndarray], objective: Callable[[np.ndarray], np.ndarray],
          x0: np.ndarray, lipschitz: np.ndarray, l1: np.ndarray | float, iters: int = 3000,
          mask: np.ndarray | float = 1.0) -> np.ndarray:
    """FISTA with per-instance adaptive (function-value) restart, in float64 NumPy.

    Minimizes ``g(x) + l1 * ||mask * x||_1`` for each instance along axis 0 of
    ``x0`` (shape ``(m, d)``); ``grad`` and ``objective`` act on all instances at
    once (``objective`` returns ``(m,)``); ``lipschitz`` is ``(m,)``.
    """
    step = 1.0 / np.asarray(lipschitz, np.float64)[:, None]
    thresh = step * l1 * mask
    x = np.asarray(x0, np.float64)
    y, t = x.copy(), np.ones((x.shape[0], 1))
    fx = objective(x)
    for _ in range(iters):
        x_new = _soft(y - step * grad(y), thresh)
        f_new = objective(x_new)
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        restart = (f_new > fx)[:, None]
        y = np.where(restart, x_new, x_new + ((t - 1.0) / t_new) * (x_new - x))
        t = np.where(restart, 1.0, t_new)
        x, fx = x_new, f_new
    return x


def _lasso_numpy(a: np.ndarray, b: np.ndarray, l1: float):
    """(objective, grad) of 1/2||A x - b||^2 + l1||x||_1 per instance, float64."""

    def smooth_grad(x):
        return np.einsum("mij,mi->mj", a, np.einsum("mij,mj->mi", a, x) - b)

    def objective(x):
        r = np.einsum("mij,mj->mi", a, x) - b
        return 0.5 * np.sum(r * r, -1) + l1 * np.sum(np.abs(x), -1)

    return smooth_grad, objective


def _lasso_optimum(a: np.ndarray, b: np.ndarray, l1: float) -> tuple[np.ndarray, float]:
    """Per-instance LASSO minimizers (m, d) and the max KKT residual."""
    grad, objective = _lasso_numpy(a, b, l1)
    lip = np.linalg.eigvalsh(np.einsum("mij,mik->mjk", a, a))[:, -1]
    x = fista(grad, objective, np.zeros(b.shape[:1] + a.shape[2:]), lip, l1, iters=4000)
    # Polish: on the support S with signs s, the optimum solves A_S^T A_S x_S = A_S^T b - l1 s.
    for i in range(a.shape[0]):
        support = np.abs(x[i]) > 1e-9
        if not support.any():
            continue
        a_s = a[i][:, support]
        s = np.sign(x[i][support])
        cand = np.zeros_like(x[i])
        try:
            cand[support] = np.linalg.solve(a_s.T @ a_s, a_s.T @ b[i] - l1 * s)
        except np.linalg.LinAlgError:
            continue
        corr = a[i].T @ (a[i] @ cand - b[i])
        ok = (np.all(np.sign(cand[support]) == s)
              and np.all(np.abs(corr[~support]) <= l1 * (1 + 1e-9) + 1e-12))
        if ok and objective(cand[None])[0] <= objective(x[i][None])[0] + 1e-15:
            x[i] = cand
    return x, _kkt_residual(grad, x, lip, l1)


def _kkt_residual(grad: Callable[[np.ndarray], np.ndarray], x: np.ndarray, lip: np.ndarray,
                  l1: float, mask: np.ndarray | float = 1.0) -> float:
    step = 1.0 / lip[:, None]
    fixed = _soft(x - step * grad(x), step * l1 * mask)
    return float(np.max(np.linalg.norm(x - fixed, axis=-1) * lip))


# ---------------------------------------------------------------- task assembly


def _matrix_graph(params_abstract: Any, a: jax.Array) -> Callable[[], jraph.GraphsTuple]:
    """Cached traced graph of ``x -> A x`` (one dense-like node)."""

    @functools.cache
    def graph() -> jraph.GraphsTuple:
        return architecture_graph(lambda p, a_: jnp.einsum("mij,mj->mi", a_, p["x"]),
                                  params_abstract, a)

    return graph


def _data_free_task(name: str, group: str, init: Callable, objective: Callable[[Any], Array],
                    smooth: Callable[[Any], Array], l1: float, min_loss: float, optimum: Any,
                    graph: Callable[[], jraph.GraphsTuple], info: dict) -> Task:
    """A deterministic problem: ``sample`` returns ``()`` and ``loss`` ignores it."""
    f_star = jnp.float32(min_loss)

    def sample(key: Array) -> tuple:
        del key
        return ()

    def loss(params: Any, batch: Any = ()) -> Array:
        del batch
        return objective(params)

    @functools.partial(jax.jit, static_argnames="split")
    def evaluate(params: Any, split: str) -> dict[str, Array]:
        check_split(split)
        value = objective(params)
        return {"loss": value, "suboptimality": value - f_star}

    abstract = jax.eval_shape(init, jax.random.key(0))
    full = {"group": group, "metrics": ("loss", "suboptimality"), "stochastic": False,
            "l1": l1, "l1_mask": jax.tree.map(lambda _: l1 > 0, abstract),
            "smooth_loss": lambda params, batch=(): smooth(params), "min_loss": float(min_loss),
            "optimum": optimum}
    full.update(info)
    return Task(name=name, kind="synthetic", init=init, sample=sample, loss=loss,
                evaluate=evaluate, graph=graph, num_params=count_params(abstract), info=full)


def _least_squares_task(name: str, group: str, a: np.ndarray, b: np.ndarray, l1: float,
                        init_scale: float, info: dict) -> Task:
    m, _, d = a.shape
    a_j, b_j = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)

    def smooth(params: Any) -> Array:
        r = jnp.einsum("mij,mj->mi", a_j, params["x"]) - b_j
        return jnp.mean(0.5 * jnp.sum(r * r, -1))

    def objective(params: Any) -> Array:
        return smooth(params) + l1 * jnp.mean(jnp.sum(jnp.abs(params["x"]), -1))

    def init(key: Array) -> Any:
        return {"x": init_scale * jax.random.normal(key, (m, d), jnp.float32)}

    grad, obj_np = _lasso_numpy(a, b, l1)
    if l1 > 0:
        x_star, kkt = _lasso_optimum(a, b, l1)
    else:
        x_star = np.stack([np.linalg.lstsq(a[i], b[i], rcond=None)[0] for i in range(m)])
        kkt = float(np.max(np.linalg.norm(grad(x_star), axis=-1)))
    min_loss = float(np.mean(obj_np(x_star)))
    abstract = jax.eval_shape(init, jax.random.key(0))
    info = {"instances": m, "dim": d, "kkt_residual": kkt, **info}
    return _data_free_task(name, group, init, objective, smooth, l1, min_loss,
                           {"x": jnp.asarray(x_star, jnp.float32)},
                           _matrix_graph(abstract, a_j), info)


def lasso(name: str = "synthetic/lasso", *, instances: int = 128, dim: int = 10,
          l1: float = 0.005, distribution: str = "uniform_mixture",
          scales: tuple[float, ...] = (0.25, 0.5, 1.0), sigma: float = 1.0,
          init_scale: float = 0.01, seed: int = 1) -> Task:
    """M-L2O LASSO: mean over instances of ``1/2 ||A x - b||^2 + l1 ||x||_1``.

    Args:
      distribution: ``"uniform_mixture"`` (meta-train: each instance's A ~
        U(0, s), s drawn from ``scales``) or ``"gaussian"`` (the shifted
        distribution: A ~ N(0, sigma^2)). b ~ U(0, 1) in both.
      seed: fixes the instances.
    """
    rng = np.random.default_rng(seed)
    if distribution == "uniform_mixture":
        s = rng.choice(np.asarray(scales, np.float64), size=(instances, 1, 1))
        a = rng.uniform(0.0, 1.0, (instances, dim, dim)) * s
    elif distribution == "gaussian":
        a = sigma * rng.standard_normal((instances, dim, dim))
    else:
        raise ValueError(f"unknown LASSO distribution {distribution!r}; expected "
                         "'uniform_mixture' or 'gaussian'.")
    b = rng.uniform(0.0, 1.0, (instances, dim))
    return _least_squares_task(name, "lasso", a, b, l1, init_scale,
                               {"distribution": distribution})


def quadratic(name: str = "synthetic/quadratic", *, instances: int = 128, dim: int = 10,
              sigma: float = 1.0, init_scale: float = 0.01, seed: int = 2) -> Task:
    """M-L2O Quadratic: mean over instances of ``1/2 ||A x - b||^2``, A ~ N(0, sigma^2), b ~ U(-1, 1)."""
    rng = np.random.default_rng(seed)
    a = sigma * rng.standard_normal((instances, dim, dim))
    b = rng.uniform(-1.0, 1.0, (instances, dim))
    return _least_squares_task(name, "quadratic", a, b, 0.0, init_scale,
                               {"distribution": "gaussian"})


def quadratic_tiny(name: str = "synthetic/quadratic_tiny", *, seed: int = 3) -> Task:
    """A tiny, well-conditioned quadratic (4 instances x 5 dims, 20 parameters).

    For fast unit tests of the meta-training engine: it compiles and runs in
    milliseconds, and plain gradient descent with step 0.5 on its loss (the
    mean over the 4 instances, so 0.125 per instance) reaches a suboptimality
    below 1e-6 in 300 steps.
    """
    m, d = 4, 5
    rng = np.random.default_rng(seed)
    a = np.eye(d)[None] + 0.2 * rng.standard_normal((m, d, d)) / np.sqrt(d)
    b = rng.uniform(-1.0, 1.0, (m, d))
    return _least_squares_task(name, "quadratic", a, b, 0.0, 0.01, {"for_unit_tests": True})


def rosenbrock(name: str = "synthetic/rosenbrock", *, instances: int = 128,
               init_scale: float = 1.0) -> Task:
    """M-L2O Rosenbrock (A.6): mean of ``(1 - u)^2 + 100 (v - u^2)^2`` over instances, x0 ~ N(0, 1)."""

    def objective(params: Any) -> Array:
        u, v = params["x"][:, 0], params["x"][:, 1]
        return jnp.mean((1.0 - u) ** 2 + 100.0 * (v - u ** 2) ** 2)

    def init(key: Array) -> Any:
        return {"x": init_scale * jax.random.normal(key, (instances, 2), jnp.float32)}

    abstract = jax.eval_shape(init, jax.random.key(0))

    @functools.cache
    def graph() -> jraph.GraphsTuple:
        return architecture_graph(abstract)  # no data to trace with: the params-only graph

    return _data_free_task(name, "rosenbrock", init, objective, objective, 0.0, 0.0,
                           {"x": jnp.ones((instances, 2), jnp.float32)}, graph,
                           {"instances": instances, "dim": 2, "kkt_residual": 0.0,
                            "convex": False})


def sparse_logreg(name: str = "synthetic/sparse_logreg", *, rows: int = 1000, dim: int = 32,
                  nonzeros: int = 4, weight_scale: float = 2.0, l1: float = 0.02,
                  batch_size: int = 64, seed: int = 4) -> Task:
    """L1-regularized logistic regression on synthetic sparse data.

    ``X ~ N(0, I_dim)``, ``w_true`` has ``nonzeros`` entries ~ N(0, weight_scale^2),
    ``y ~ Bernoulli(sigmoid(X w_true))``; rows split 60/20/20. The model is a
    ``Dense(1)`` (kernel penalized, bias not); ``loss`` on a minibatch is the mean
    logistic loss plus ``l1 * ||kernel||_1``.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, dim))
    w_true = np.zeros(dim)
    w_true[rng.choice(dim, nonzeros, replace=False)] = weight_scale * rng.standard_normal(nonzeros)
    y = (rng.uniform(size=rows) < 1.0 / (1.0 + np.exp(-(x @ w_true)))).astype(np.float64)
    n_tr, n_val = int(0.6 * rows), int(0.2 * rows)
    cuts = {"train": slice(0, n_tr), "validation": slice(n_tr, n_tr + n_val),
            "test": slice(n_tr + n_val, rows)}
    model = models.Dense(1)
    xs = {s: jnp.asarray(x[c], jnp.float32) for s, c in cuts.items()}
    ys = {s: jnp.asarray(y[c], jnp.float32) for s, c in cuts.items()}

    # float64 optimum per split: z = [w, bias], the bias unpenalized.
    optima, kkt = {}, 0.0
    for s, c in cuts.items():
        xa = np.concatenate([x[c], np.ones((len(y[c]), 1))], axis=1)
        ys_ = y[c]
        n = len(ys_)

        def grad(z, xa=xa, ys_=ys_, n=n):
            p = 1.0 / (1.0 + np.exp(-(z @ xa.T)))
            return (p - ys_) @ xa / n

        def obj(z, xa=xa, ys_=ys_, n=n):
            logits = z @ xa.T
            return (np.mean(np.logaddexp(0.0, logits) - ys_ * logits, -1)
                    + l1 * np.sum(np.abs(z[:, :-1]), -1))

        lip = np.array([np.linalg.eigvalsh(xa.T @ xa)[-1] / (4.0 * n)])
        mask = np.concatenate([np.ones(dim), [0.0]])
        z = fista(grad, obj, np.zeros((1, dim + 1)), lip, l1, iters=1500, mask=mask)
        kkt = max(kkt, _kkt_residual(grad, z, lip, l1, mask))
        optima[s] = (float(obj(z)[0]), z[0])
    f_star = {s: jnp.float32(v) for s, (v, _) in optima.items()}

    def init(key: Array) -> Any:
        return model.init(key, xs["train"][:1])["params"]

    def smooth(params: Any, batch: tuple[Array, Array]) -> Array:
        logits = model.apply({"params": params}, batch[0])[:, 0]
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, batch[1]))

    def penalty(params: Any) -> Array:
        return l1 * jnp.sum(jnp.abs(params["kernel"]))

    def loss(params: Any, batch: tuple[Array, Array]) -> Array:
        return smooth(params, batch) + penalty(params)

    x_train, y_train = xs["train"], ys["train"]

    def sample(key: Array) -> tuple[Array, Array]:
        idx = jax.random.randint(key, (batch_size,), 0, x_train.shape[0])
        return x_train[idx], y_train[idx]

    @functools.partial(jax.jit, static_argnames="split")
    def evaluate(params: Any, split: str) -> dict[str, Array]:
        check_split(split)
        value = loss(params, (xs[split], ys[split]))
        logits = model.apply({"params": params}, xs[split])[:, 0]
        accuracy = jnp.mean((logits > 0) == (ys[split] > 0.5))
        return {"loss": value, "accuracy": accuracy, "suboptimality": value - f_star[split]}

    abstract = jax.eval_shape(init, jax.random.key(0))

    @functools.cache
    def graph() -> jraph.GraphsTuple:
        return architecture_graph(model.apply, {"params": abstract}, xs["train"][:1])

    z_train = optima["train"][1]
    optimum = {"kernel": jnp.asarray(z_train[:-1, None], jnp.float32),
               "bias": jnp.asarray(z_train[-1:], jnp.float32)}
    info = {"group": "sparse_logreg", "metrics": ("loss", "accuracy", "suboptimality"),
            "stochastic": True, "l1": l1, "l1_mask": {"kernel": True, "bias": False},
            "smooth_loss": smooth, "min_loss": optima["train"][0],
            "min_loss_per_split": {s: v for s, (v, _) in optima.items()},
            "optimum": optimum, "kkt_residual": kkt, "w_true": w_true, "batch_size": batch_size,
            "train_size": n_tr, "dim": dim}
    return Task(name=name, kind="synthetic", init=init, sample=sample, loss=loss,
                evaluate=evaluate, graph=graph, num_params=count_params(abstract), info=info)
