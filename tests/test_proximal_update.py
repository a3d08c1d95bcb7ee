"""Tests for the shared proximal update kernel (mapa_jax.proximal_update)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mapa_jax as mj
from mapa_jax import proximal_update as pu
from mapa_jax import transforms


def _tree(dtype=jnp.float32):
    return {
        "w": jnp.array([[0.5, -0.02], [0.03, -1.0]], dtype),
        "b": jnp.array([0.01, -0.3], dtype),
    }


def test_compute_dtype_is_float32_or_wider():
    assert pu.compute_dtype(jnp.float16) == jnp.float32
    assert pu.compute_dtype(jnp.bfloat16) == jnp.float32
    assert pu.compute_dtype(jnp.float32) == jnp.float32
    assert pu.compute_dtype(np.float64) == np.float64
    for dtype in (jnp.float16, jnp.bfloat16, jnp.float32):
        assert pu.as_compute_dtype(jnp.ones(2, dtype)).dtype == jnp.float32
    with jax.enable_x64(True):
        assert pu.as_compute_dtype(jnp.ones(2, jnp.float64)).dtype == jnp.float64


def test_adam_direction_two_steps_equal_float64_hand_computation():
    # b1, b2 whose powers are exact in float32 (the bias corrections' dtype).
    b1, b2, eps = 0.5, 0.75, 1e-8
    rng = np.random.default_rng(0)
    g1, g2 = rng.normal(size=(2, 3, 2))
    with jax.enable_x64(True):
        zeros = {"w": jnp.zeros((3, 2), jnp.float64)}
        mu, nu, _, _ = pu.adam_direction({"w": jnp.asarray(g1)}, zeros, zeros, jnp.asarray(1), b1=b1, b2=b2, eps=eps)
        mu, nu, m_hat, d = pu.adam_direction({"w": jnp.asarray(g2)}, mu, nu, jnp.asarray(2), b1=b1, b2=b2, eps=eps)
        assert m_hat["w"].dtype == d["w"].dtype == jnp.float64
    m = b1 * (1 - b1) * g1 + (1 - b1) * g2
    v = b2 * (1 - b2) * g1**2 + (1 - b2) * g2**2
    np.testing.assert_allclose(mu["w"], m, rtol=1e-14)
    np.testing.assert_allclose(nu["w"], v, rtol=1e-14)
    np.testing.assert_allclose(m_hat["w"], m / (1 - b1**2), rtol=1e-14)
    np.testing.assert_allclose(d["w"], np.sqrt(v / (1 - b2**2)) + eps, rtol=1e-14)


def test_adam_direction_keep_false_leaves_the_stored_moments_and_true_is_no_keep():
    g, p = _tree(), _tree()
    mu = jax.tree.map(lambda x: 0.1 * x, p)
    nu = jax.tree.map(lambda x: x * x, p)
    kw = dict(b1=0.9, b2=0.999, eps=1e-8)
    kept = pu.adam_direction(g, mu, nu, jnp.asarray(3), keep=jnp.asarray(False), **kw)
    jax.tree.map(np.testing.assert_array_equal, (kept[0], kept[1]), (mu, nu))
    jax.tree.map(
        np.testing.assert_array_equal,
        pu.adam_direction(g, mu, nu, jnp.asarray(3), keep=jnp.asarray(True), **kw),
        pu.adam_direction(g, mu, nu, jnp.asarray(3), **kw),
    )


def test_update_moment_is_optax_moment_in_float32_and_accumulates_low_precision_in_float32():
    g = _tree()
    m = jax.tree.map(lambda x: 0.5 * x, g)
    for order in (1, 2):
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
            pu.update_moment(g, m, 0.9, order),
            optax.tree.update_moment(g, m, 0.9, order),
        )
    g16, m16 = _tree(jnp.bfloat16), jax.tree.map(lambda x: (0.5 * x).astype(jnp.bfloat16), g)
    out = pu.update_moment(g16, m16, 0.99, 2)
    want = jax.tree.map(
        lambda a, b: (0.99 * b.astype(jnp.float32) + 0.01 * a.astype(jnp.float32) ** 2).astype(jnp.bfloat16), g16, m16
    )
    jax.tree.map(np.testing.assert_array_equal, out, want)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(out))


def test_preconditioner_has_a_finite_gradient_where_the_moment_is_zero():
    grad = jax.grad(lambda v: jnp.sum(pu.preconditioner(v, 1e-8)))(jnp.zeros(3))
    np.testing.assert_array_equal(grad, 0.0)
    np.testing.assert_allclose(pu.preconditioner(jnp.array([4.0]), 1e-8), [2.0 + 1e-8])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf, -jnp.inf])
def test_gradients_finite_flags_one_bad_entry_in_any_tensor_of_a_tree(dtype, bad):
    grads = {"a": jnp.ones((3, 4), dtype), "b": [jnp.full((5,), -2.0, dtype), jnp.zeros((2, 2, 2), dtype)]}
    assert bool(pu.gradients_finite(grads)) and bool(jax.jit(pu.gradients_finite)(grads))
    leaves, treedef = jax.tree.flatten(grads)
    for i, g in enumerate(leaves):
        poisoned = list(leaves)
        poisoned[i] = g.reshape(-1).at[g.size - 1].set(bad).reshape(g.shape)
        assert not bool(pu.gradients_finite(treedef.unflatten(poisoned))), i
        assert not bool(jax.jit(pu.gradients_finite)(treedef.unflatten(poisoned))), i


def test_gradients_finite_sums_low_precision_in_float32_and_an_empty_tree_is_finite():
    # The float16 sum of these (1e5) overflows float16 (max 65504); they are finite.
    assert bool(pu.gradients_finite([jnp.ones((100_000,), jnp.float16)]))
    assert bool(pu.gradients_finite({})) and bool(pu.gradients_finite([]))
    assert pu.gradients_finite([jnp.ones(2)]).dtype == jnp.bool_
    from mapa_jax import features

    assert features.gradients_finite is pu.gradients_finite  # mapa's check is this one


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_proximal_updates_without_prox_returns_the_moves_in_the_param_dtypes(dtype):
    p = _tree(dtype)
    moves = jax.tree.map(lambda x: -0.1 * x.astype(jnp.float32), _tree())
    out = pu.proximal_updates(moves, p, 0.1, [True, True], None)
    for o, m, q in zip(jax.tree.leaves(out), jax.tree.leaves(moves), jax.tree.leaves(p)):
        assert o.dtype == q.dtype
        np.testing.assert_array_equal(o, m.astype(dtype))


def test_proximal_updates_is_prox_of_the_moved_point_on_masked_leaves():
    p = _tree()
    moves = jax.tree.map(lambda x: 0.25 * x, p)
    mask = pu.resolve_mask(None, p, "test")  # leaves in key order: b, w
    assert mask == [False, True]
    seen = []

    def prox(x, step):
        seen.append(step)
        return mj.prox.soft_threshold(x, 0.1)

    for steps in (0.1, {"w": 0.1, "b": 0.1}, [0.1, 0.1]):
        out = pu.proximal_updates(moves, p, steps, mask, prox)
        np.testing.assert_array_equal(out["b"], moves["b"])
        z = p["w"] + moves["w"]
        np.testing.assert_allclose(out["w"], mj.prox.soft_threshold(z, 0.1) - p["w"], rtol=1e-6, atol=1e-7)
    assert seen == [0.1, 0.1, 0.1]  # one call per masked leaf, with that leaf's step


def test_checks_name_the_problem():
    p = _tree()
    with pytest.raises(ValueError, match="needs params"):
        pu.check_params(p, None, "where")
    with pytest.raises(ValueError, match=r"update \['w'\] has shape \(3,\)"):
        pu.check_params({"w": jnp.ones(3), "b": p["b"]}, p, "where")
    with pytest.raises(ValueError, match="mask must be a pytree of bools"):
        pu.resolve_mask({"w": True}, p, "where")
    with pytest.raises(ValueError, match="mask leaves must be bools"):
        pu.resolve_mask({"w": True, "b": 1.0}, p, "where")
    with pytest.raises(ValueError, match="learning_rate must be a scalar"):
        pu.check_learning_rate(np.ones(2), "where")
    assert pu.make_prox(None, 0.0, 0.0, "where") is None
    with pytest.raises(TypeError, match="prox must be a callable"):
        pu.make_prox(3.0, 0.0, 0.0, "where")


def test_transforms_reexports_the_kernel_names():
    for name in ("default_mask", "check_params", "resolve_mask", "make_prox", "proximal_updates",
                 "check_learning_rate", "as_compute_dtype", "preconditioner", "MaskOrFn", "ProxFn"):
        assert getattr(transforms, name) is getattr(pu, name), name
    assert mj.default_mask is pu.default_mask
