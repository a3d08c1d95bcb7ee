"""Tests for the proximal optimizers in mapa_jax.transforms."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mapa_jax as mj


def _params(dtype=jnp.float32):
    return {
        "dense": {"kernel": jnp.array([[0.5, -0.02], [0.03, -1.0]], dtype), "bias": jnp.array([0.01, -0.3], dtype)},
        "out": {"kernel": jnp.array([[0.2], [-0.4]], dtype)},
    }


def _grads(dtype=jnp.float32):
    return {
        "dense": {"kernel": jnp.array([[1.0, 0.5], [-2.0, 0.1]], dtype), "bias": jnp.array([0.3, -0.1], dtype)},
        "out": {"kernel": jnp.array([[-0.5], [0.25]], dtype)},
    }


def _soft(x, t):
    return np.sign(x) * np.maximum(np.abs(x) - t, 0.0)


OPTIMIZERS = {
    "proximal_gradient": lambda: mj.proximal_gradient(0.1, l1=0.05, l2=0.1),
    "prox_adam": lambda: mj.prox_adam(0.1, l1=0.05, l2=0.1),
    "prox_rmsprop": lambda: mj.prox_rmsprop(0.1, l1=0.05, l2=0.1),
    "prox_step": lambda: optax.chain(optax.sgd(0.1), mj.prox_step(0.1, l1=0.05, l2=0.1)),
}


# ------------------------------------------------------------ hand-computed steps


class TestHandComputedSteps(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_proximal_gradient_one_step_equals_hand_computed(self):
        lr, l1, l2 = 0.1, 0.05, 0.1
        tx = mj.proximal_gradient(lr, l1=l1, l2=l2)
        p, g = _params(), _grads()
        u, _ = self.variant(tx.update)(g, tx.init(p), p)
        new = optax.apply_updates(p, u)
        for path in (("dense", "kernel"), ("out", "kernel")):
            pn, gn = np.asarray(p[path[0]][path[1]], np.float64), np.asarray(g[path[0]][path[1]], np.float64)
            want = _soft(pn - lr * gn, lr * l1) / (1 + lr * l2)
            np.testing.assert_allclose(new[path[0]][path[1]], want, rtol=1e-6, atol=1e-7)
        # biases are not proximal by default: a plain gradient step
        np.testing.assert_allclose(new["dense"]["bias"], np.array([0.01, -0.3]) - lr * np.array([0.3, -0.1]), rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_prox_adam_one_step_equals_hand_computed(self):
        lr, l1, l2, b1, b2, eps = 0.1, 0.05, 0.1, 0.9, 0.999, 1e-8
        tx = mj.prox_adam(lr, b1=b1, b2=b2, eps=eps, l1=l1, l2=l2)
        p, g = _params(), _grads()
        u, state = self.variant(tx.update)(g, tx.init(p), p)
        new = optax.apply_updates(p, u)
        pn, gn = np.asarray(p["dense"]["kernel"], np.float64), np.asarray(g["dense"]["kernel"], np.float64)
        m_hat = (1 - b1) * gn / (1 - b1)  # = g after one step
        v_hat = (1 - b2) * gn**2 / (1 - b2)  # = g^2
        d = np.sqrt(v_hat) + eps
        z = pn - lr * m_hat / d
        want = _soft(z, lr * l1 / d) / (1 + lr * l2 / d)
        np.testing.assert_allclose(new["dense"]["kernel"], want, rtol=1e-5, atol=1e-7)
        assert int(state.count) == 1
        np.testing.assert_allclose(state.mu["dense"]["kernel"], 0.1 * gn, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_prox_rmsprop_one_step_equals_hand_computed(self):
        lr, l1, decay, eps = 0.1, 0.05, 0.9, 1e-8
        tx = mj.prox_rmsprop(lr, decay=decay, eps=eps, l1=l1)
        p, g = _params(), _grads()
        u, _ = self.variant(tx.update)(g, tx.init(p), p)
        new = optax.apply_updates(p, u)
        pn, gn = np.asarray(p["out"]["kernel"], np.float64), np.asarray(g["out"]["kernel"], np.float64)
        d = np.sqrt((1 - decay) * gn**2) + eps
        want = _soft(pn - lr * gn / d, lr * l1 / d)
        np.testing.assert_allclose(new["out"]["kernel"], want, rtol=1e-5, atol=1e-7)

    @chex.variants(with_jit=True, without_jit=True)
    def test_prox_step_after_adam_is_prox_of_the_adam_point(self):
        tx = optax.chain(optax.adam(1e-2), mj.prox_step(1e-2, l1=5.0))
        p, g = _params(), _grads()
        u, _ = self.variant(tx.update)(g, tx.init(p), p)
        adam_u, _ = optax.adam(1e-2).update(g, optax.adam(1e-2).init(p), p)
        z = np.asarray(p["dense"]["kernel"]) + np.asarray(adam_u["dense"]["kernel"])
        new = optax.apply_updates(p, u)
        np.testing.assert_allclose(new["dense"]["kernel"], _soft(z, 1e-2 * 5.0), rtol=1e-6, atol=1e-7)

    def test_without_penalty_prox_adam_equals_optax_adam(self):
        p, g = _params(), _grads()
        a, b = mj.prox_adam(1e-2), optax.adam(1e-2)
        sa, sb = a.init(p), b.init(p)
        for _ in range(3):
            ua, sa = a.update(g, sa, p)
            ub, sb = b.update(g, sb, p)
            chex.assert_trees_all_close(ua, ub, rtol=1e-6)


def test_custom_prox_receives_the_step_and_schedules_are_followed():
    seen = []

    def recording_prox(x, step):
        seen.append(step)
        return mj.prox.huber_shrinkage(x, 0.1, 1.0, eta=step)

    schedule = optax.linear_schedule(0.1, 0.0, transition_steps=2)
    tx = mj.proximal_gradient(schedule, prox=recording_prox)
    p, g = _params(), _grads()
    s = tx.init(p)
    lrs = []
    for _ in range(3):
        u, s = tx.update(g, s, p)
        lrs.append(float(-u["dense"]["bias"][0] / g["dense"]["bias"][0]))
    np.testing.assert_allclose(lrs, [0.1, 0.05, 0.0], atol=1e-7)
    np.testing.assert_allclose([float(x) for x in seen[::2]], [0.1, 0.05, 0.0], atol=1e-7)


def test_mask_selects_the_tensors_that_get_the_prox():
    p, g = _params(), _grads()
    strong = dict(l1=100.0)
    everything = mj.proximal_gradient(0.1, mask=lambda q: jax.tree.map(lambda _: True, q), **strong)
    new = optax.apply_updates(p, everything.update(g, everything.init(p), p)[0])
    assert all(np.all(np.asarray(x) == 0.0) for x in jax.tree.leaves(new))
    only_out = {"dense": {"kernel": False, "bias": False}, "out": {"kernel": True}}
    tx = mj.proximal_gradient(0.1, mask=only_out, **strong)
    new = optax.apply_updates(p, tx.update(g, tx.init(p), p)[0])
    assert np.all(np.asarray(new["out"]["kernel"]) == 0.0)
    assert np.all(np.asarray(new["dense"]["kernel"]) != 0.0)


def test_projection_from_optax_as_prox():
    tx = mj.proximal_gradient(1.0, prox=mj.prox.from_projection(optax.projections.projection_non_negative))
    p, g = _params(), _grads()
    new = optax.apply_updates(p, tx.update(g, tx.init(p), p)[0])
    assert np.all(np.asarray(new["dense"]["kernel"]) >= 0.0)
    assert np.any(np.asarray(new["dense"]["bias"]) < 0.0)  # bias not masked


# ------------------------------------------------------------ state invariants


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_update_keeps_state_structure_shapes_and_dtypes(name, dtype):
    tx = OPTIMIZERS[name]()
    p, g = _params(dtype), _grads(dtype)
    s0 = tx.init(p)
    u, s1 = jax.jit(tx.update)(g, s0, p)
    chex.assert_trees_all_equal_structs(s0, s1)
    chex.assert_trees_all_equal_shapes_and_dtypes(s0, s1)
    chex.assert_trees_all_equal_shapes_and_dtypes(u, p)
    new = optax.apply_updates(p, u)
    chex.assert_trees_all_equal_shapes_and_dtypes(new, p)
    assert all(np.all(np.isfinite(np.asarray(x, np.float32))) for x in jax.tree.leaves(new))


# ------------------------------------------------------------ optax / flax composition


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_works_in_chain_masked_multisteps_and_apply_if_finite(name):
    p, g = _params(), _grads()
    wrappers = {
        "chain": lambda tx: optax.chain(optax.clip_by_global_norm(1.0), tx),
        "masked": lambda tx: optax.masked(tx, {"dense": {"kernel": True, "bias": True}, "out": {"kernel": False}}),
        "multi_steps": lambda tx: optax.MultiSteps(tx, every_k_schedule=2),
        "apply_if_finite": lambda tx: optax.apply_if_finite(tx, max_consecutive_errors=3),
    }
    for wname, wrap in wrappers.items():
        tx = wrap(OPTIMIZERS[name]())
        s = tx.init(p)
        u, s = jax.jit(tx.update)(g, s, p, value=jnp.float32(1.0))
        u, s = jax.jit(tx.update)(g, s, p, value=jnp.float32(1.0))
        chex.assert_trees_all_equal_shapes_and_dtypes(u, p)
        assert any(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(u)), wname
        if wname == "masked":
            np.testing.assert_array_equal(u["out"]["kernel"], g["out"]["kernel"])  # untouched
    bad = jax.tree.map(lambda x: x * jnp.nan, g)
    tx = optax.apply_if_finite(OPTIMIZERS[name](), max_consecutive_errors=3)
    s = tx.init(p)
    u, s = tx.update(bad, s, p)
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(u))
    assert int(s.notfinite_count) == 1


def test_works_with_flax_nnx_optimizer():
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(4, 8, rngs=rngs)
            self.l2 = nnx.Linear(8, 1, rngs=rngs)

        def __call__(self, x):
            return self.l2(jax.nn.relu(self.l1(x)))

    model = Model(nnx.Rngs(0))
    opt = nnx.Optimizer(model, mj.prox_adam(1e-2, l1=1e-2), wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(0), (32, 4))
    y = x[:, :1] * 2.0

    def loss_fn(m):
        return jnp.mean((m(x) - y) ** 2)

    @nnx.jit
    def step(m, o):
        loss, grads = nnx.value_and_grad(loss_fn)(m)
        o.update(m, grads, value=loss)
        return loss

    losses = [float(step(model, opt)) for _ in range(50)]
    assert losses[-1] < 0.5 * losses[0]


# ------------------------------------------------------------ convergence


def _lasso_problem(seed=0, m=30, n=60):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(m, n))
    x_true = np.zeros(n)
    x_true[rng.choice(n, 6, replace=False)] = rng.normal(size=6) * 3
    b = A @ x_true + 0.01 * rng.normal(size=m)
    l1 = 0.1 * np.max(np.abs(A.T @ b)) / m
    L = np.linalg.eigvalsh(A.T @ A / m).max()
    return A, b, l1, L


def _lasso_objective(x, A, b, l1):
    return 0.5 * np.sum((A @ x - b) ** 2) / A.shape[0] + l1 * np.sum(np.abs(x))


def _fista_reference(A, b, l1, L, iters=20000):
    """Float64 FISTA (constant step 1/L), an independent reference for F*."""
    m = A.shape[0]
    x = y = np.zeros(A.shape[1])
    t = 1.0
    for _ in range(iters):
        x_new = _soft(y - A.T @ (A @ y - b) / (m * L), l1 / L)
        t_new = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
        y = x_new + (t - 1) / t_new * (x_new - x)
        x, t = x_new, t_new
    return x


def test_pgd_reaches_lasso_optimum_with_exact_zeros():
    A, b, l1, L = _lasso_problem()
    x_star = _fista_reference(A, b, l1, L)
    f_star = _lasso_objective(x_star, A, b, l1)
    with jax.enable_x64(True):
        Aj, bj = jnp.asarray(A), jnp.asarray(b)
        tx = mj.proximal_gradient(1.0 / L, l1=l1, mask=lambda p: jax.tree.map(lambda _: True, p))
        grad = jax.grad(lambda x: 0.5 * jnp.sum((Aj @ x - bj) ** 2) / A.shape[0])

        def body(carry, _):
            x, s = carry
            u, s = tx.update(grad(x), s, x)
            return (optax.apply_updates(x, u), s), None

        x0 = jnp.zeros(A.shape[1])
        (x, _), _ = jax.lax.scan(body, (x0, tx.init(x0)), None, length=5000)
        x = np.asarray(x)
    rel = (_lasso_objective(x, A, b, l1) - f_star) / abs(f_star)
    assert rel <= 1e-6, rel
    assert np.sum(x == 0.0) >= A.shape[1] // 2  # exact zeros, not merely small
    np.testing.assert_array_equal(x == 0.0, np.abs(x_star) < 1e-9)


# ------------------------------------------------------------ bad input


@pytest.mark.parametrize("name", ["proximal_gradient", "prox_adam", "prox_rmsprop", "prox_step"])
def test_update_without_params_raises(name):
    tx = getattr(mj, name)(0.1, l1=0.1)
    p = _params()
    with pytest.raises(ValueError, match="needs params"):
        tx.update(_grads(), tx.init(p), None)


@pytest.mark.parametrize("name", ["proximal_gradient", "prox_adam", "prox_rmsprop", "prox_step"])
def test_bad_input_raises_error_naming_the_problem(name):
    make = getattr(mj, name)
    with pytest.raises(ValueError, match="learning_rate must be >= 0"):
        make(-0.1)
    with pytest.raises(ValueError, match="l1 must be >= 0"):
        make(0.1, l1=-1.0)
    with pytest.raises(ValueError, match="either prox= or l1"):
        make(0.1, l1=1.0, prox=lambda x, s: x)
    tx = make(0.1, l1=0.1)
    p = _params()
    s = tx.init(p)
    with pytest.raises(ValueError, match="different tree structures"):
        tx.update({"dense": _grads()["dense"]}, s, p)
    wrong_shape = jax.tree.map(lambda x: x, _grads())
    wrong_shape["out"]["kernel"] = jnp.ones((3, 1))
    with pytest.raises(ValueError, match=r"\['out'\]\['kernel'\] has shape \(3, 1\)"):
        tx.update(wrong_shape, s, p)
    int_params = {"w": jnp.ones((2, 2), jnp.int32)}
    with pytest.raises(TypeError, match=r"param \['w'\] has dtype int32"):
        tx.update({"w": jnp.ones((2, 2), jnp.int32)}, tx.init(int_params), int_params)
    with pytest.raises(ValueError, match="mask must be a pytree of bools"):
        t2 = make(0.1, l1=0.1, mask={"dense": True})
        t2.update(_grads(), t2.init(p), p)


def test_bad_hyperparameters_of_adaptive_methods():
    with pytest.raises(ValueError, match="b1 must be in"):
        mj.prox_adam(0.1, b1=1.0)
    with pytest.raises(ValueError, match="eps must be > 0"):
        mj.prox_rmsprop(0.1, eps=0.0)
    with pytest.raises(ValueError, match="decay must be in"):
        mj.prox_rmsprop(0.1, decay=-0.5)
