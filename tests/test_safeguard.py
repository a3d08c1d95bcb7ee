"""Tests for mapa_jax.safeguard: the safeguarded (KM) mode and its convergence guarantee."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mapa_jax as mj
from mapa_jax.tasks.synthetic import fista

DELTA = 0.1
CFG = mj.MetaLearnerConfig(direction="adam", lstm_hidden=16, gnn_hidden=8, gnn_rounds=2, window=4)


def _lasso():
    """LASSO ``1/(2m) ||A w - b||^2 + lam ||w||_1`` in float64, and its float64 FISTA optimum."""
    rng = np.random.default_rng(0)
    m, n, lam = 40, 16, 0.05
    a = rng.standard_normal((m, n))
    b = a @ (rng.standard_normal(n) * (rng.uniform(size=n) < 0.3)) + 0.1 * rng.standard_normal(m)

    def grad(z):
        return ((z @ a.T - b) @ a) / m

    def obj(z):
        return 0.5 * np.mean((z @ a.T - b) ** 2, -1) + lam * np.abs(z).sum(-1)

    lip = np.linalg.norm(a, 2) ** 2 / m
    f_star = float(obj(fista(grad, obj, np.zeros((1, n)), np.array([lip]), lam, iters=20000))[0])
    aj, bj = jnp.asarray(a), jnp.asarray(b)
    return dict(smooth=lambda p: 0.5 * jnp.mean((aj @ p["w"] - bj) ** 2), params={"w": jnp.zeros(n)},
                mask={"w": True}, lam=lam, lip=lip, f_star=f_star)


def _sparse_logreg():
    """L1-regularized logistic regression (bias not penalized) in float64, and its FISTA optimum."""
    rng = np.random.default_rng(1)
    rows, dim, lam = 200, 10, 0.02
    x = rng.standard_normal((rows, dim))
    w_true = np.zeros(dim)
    w_true[:3] = 2.0 * rng.standard_normal(3)
    y = (rng.uniform(size=rows) < 1.0 / (1.0 + np.exp(-(x @ w_true)))).astype(np.float64)
    xa = np.concatenate([x, np.ones((rows, 1))], axis=1)  # z = [w, bias]

    def grad(z):
        return (1.0 / (1.0 + np.exp(-(z @ xa.T))) - y) @ xa / rows

    def obj(z):
        logits = z @ xa.T
        return np.mean(np.logaddexp(0.0, logits) - y * logits, -1) + lam * np.abs(z[:, :-1]).sum(-1)

    lip = np.linalg.eigvalsh(xa.T @ xa)[-1] / (4.0 * rows)
    mask = np.concatenate([np.ones(dim), [0.0]])
    f_star = float(obj(fista(grad, obj, np.zeros((1, dim + 1)), np.array([lip]), lam, iters=30000, mask=mask))[0])
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def smooth(p):
        return jnp.mean(optax.sigmoid_binary_cross_entropy(xj @ p["w"] + p["b"], yj))

    return dict(smooth=smooth, params={"w": jnp.zeros(dim), "b": jnp.zeros(())}, mask={"w": True, "b": False},
                lam=lam, lip=lip, f_star=f_star)


def _run(problem, learned, iters, relaxation=1.0):
    """``iters`` safeguarded steps in one scan: the objective, acceptance, ``mu`` before and after, and
    the fixed-point residual of each new iterate (recomputed here, independently of the transform)."""
    smooth, lam, mask, alpha = problem["smooth"], problem["lam"], problem["mask"], 1.0 / problem["lip"]
    tx = mj.safeguarded(learned, smooth, step_size=alpha, l1=lam, mask=mask, delta=DELTA, relaxation=relaxation)

    def objective(p):
        return smooth(p) + lam * sum(jnp.sum(jnp.abs(v)) for k, v in p.items() if mask[k])

    def residual(p):
        g = jax.grad(smooth)(p)
        z = {k: p[k] - alpha * g[k] for k in p}
        t = {k: (jnp.sign(z[k]) * jnp.maximum(jnp.abs(z[k]) - alpha * lam, 0.0) if mask[k] else z[k]) for k in p}
        return jnp.sqrt(sum(jnp.sum((p[k] - t[k]) ** 2) for k in p))

    def body(carry, _):
        p, s = carry
        value, g = jax.value_and_grad(smooth)(p)
        u, s_new = tx.update(g, s, p, value=value)
        p = optax.apply_updates(p, u)
        return (p, s_new), (objective(p), s_new.last_accepted, s.mu, s_new.mu, residual(p))

    p0 = problem["params"]
    s0 = tx.init(p0)
    (p, s), trace = jax.lax.scan(body, (p0, s0), None, iters)
    return p, s, trace, (objective(p0), residual(p0), s0)


@pytest.mark.parametrize("make", [_lasso, _sparse_logreg], ids=["lasso", "sparse_logreg"])
def test_from_random_meta_params_the_iterates_reach_the_fista_optimum_and_the_test_holds(make):
    with jax.enable_x64(True):
        problem = make()
        run = jax.jit(lambda meta: _run(problem, mj.mapa(meta, CFG), 1500))
        accepted = []
        for draw in range(3):
            # Random meta-params, their scale blown up: adversarial proposals.
            meta = jax.tree.map(lambda w: 5.0 * w, mj.init_meta_params(jax.random.key(draw), CFG))
            _, s, (f, acc, mu_before, mu_after, res), (f0, res0, s0) = run(meta)
            f, acc, mu_before, mu_after, res = map(np.asarray, (f, acc, mu_before, mu_after, res))
            np.testing.assert_allclose(float(s0.mu), float(res0), rtol=1e-10)  # mu_0 = S(x_0)
            rel = (f[-1] - problem["f_star"]) / abs(problem["f_star"])
            assert rel <= 1e-6, f"draw {draw}: relative suboptimality {rel}"
            # At every accepted learned step: S(x_{k+1}) <= (1 - delta) mu_k; always S(x_k) <= mu_k
            # and F(x_k) <= F(x_0) (the theorem's invariants).
            assert np.all(res[acc] <= (1.0 - DELTA) * mu_before[acc] * (1 + 1e-9) + 1e-15)
            assert np.all(res <= mu_after * (1 + 1e-9) + 1e-15)
            assert np.all(np.diff(mu_after) <= 0) and np.all(f <= float(f0) * (1 + 1e-12))
            accepted.append(int(s.accepted))
        assert max(accepted) > 0  # the learned steps were used, not only the fallback


def test_rejected_proposals_leave_the_km_step_of_proximal_gradient_by_hand():
    """A learner whose every proposal raises F: the iterates are x + a (prox(x - alpha g) - x), in float64."""
    with jax.enable_x64(True):
        problem = _lasso()
        a_relax, alpha, lam = 0.5, 1.0 / problem["lip"], problem["lam"]
        p, s, (f, acc, *_), _ = jax.jit(lambda: _run(problem, optax.sgd(-1e3), 20, relaxation=a_relax))()
        assert int(s.accepted) == 0 and not np.any(np.asarray(acc)) and int(s.count) == 20
        x = np.zeros_like(np.asarray(problem["params"]["w"]))
        grad = jax.grad(problem["smooth"])
        for _ in range(20):
            z = x - alpha * np.asarray(grad({"w": jnp.asarray(x)})["w"])
            x = x + a_relax * (np.sign(z) * np.maximum(np.abs(z) - alpha * lam, 0.0) - x)
        np.testing.assert_allclose(np.asarray(p["w"]), x, rtol=1e-12, atol=1e-15)


def test_a_step_is_the_same_with_and_without_jit():
    problem = _lasso()
    tx = mj.safeguarded(mj.prox_adam(0.05, l1=problem["lam"], mask=problem["mask"]), problem["smooth"],
                        step_size=1.0 / problem["lip"], l1=problem["lam"], mask=True)
    out = []
    for update in (tx.update, jax.jit(tx.update)):
        p, s = problem["params"], tx.init(problem["params"])
        for _ in range(3):
            u, s = update(jax.grad(problem["smooth"])(p), s, p)
            p = optax.apply_updates(p, u)
        out.append((np.asarray(p["w"]), int(s.accepted), float(s.mu)))
    (p_eager, acc_eager, mu_eager), (p_jit, acc_jit, mu_jit) = out
    assert acc_eager == acc_jit >= 1 and int(s.count) == 3
    np.testing.assert_allclose(p_jit, p_eager, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(mu_jit, mu_eager, rtol=1e-5)


def _tx(**kw):
    args = dict(step_size=0.1, l1=0.1)
    args.update(kw)
    return mj.safeguarded(optax.sgd(0.1), lambda p: jnp.sum(p["w"] ** 2), **args)


@pytest.mark.parametrize("kw, error, match", [
    (dict(l1=0.0), ValueError, r"safeguarded: the problem has no prox"),
    (dict(l1=0.0, prox=lambda x, t: x), ValueError, r"give prox and penalty together"),
    (dict(step_size=0.0), ValueError, r"step_size must be a finite number > 0"),
    (dict(step_size=float("inf")), ValueError, r"step_size must be a finite number > 0"),
    (dict(delta=1.0), ValueError, r"delta must be a number in \(0, 1\)"),
    (dict(relaxation=0.0), ValueError, r"relaxation must be a number in \(0, 1\]"),
    (dict(relaxation=True), ValueError, r"relaxation must be a number in \(0, 1\]"),
    (dict(l1=0.0, prox=lambda x, t: x, penalty=3), TypeError, r"penalty must be a callable"),
])
def test_bad_input_is_a_clear_error(kw, error, match):
    with pytest.raises(error, match=match):
        _tx(**kw)


def test_bad_learned_smooth_or_state_is_a_clear_error():
    with pytest.raises(TypeError, match="learned must be an optax GradientTransformation"):
        mj.safeguarded(0.1, lambda p: p, step_size=0.1, l1=0.1)
    with pytest.raises(TypeError, match="smooth must be a callable"):
        mj.safeguarded(optax.sgd(0.1), 3.0, step_size=0.1, l1=0.1)
    tx = _tx()
    p = {"w": jnp.ones(3)}
    with pytest.raises(TypeError, match="state must be the SafeguardedState"):
        tx.update(p, optax.sgd(0.1).init(p), p)
