"""Tests for mapa_jax.prox: references in float64, hand-computed values, properties."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapa_jax import prox

jax.config.update("jax_numpy_rank_promotion", "allow")

finite = st.floats(-50.0, 50.0, allow_nan=False, allow_infinity=False, width=64)
pos = st.floats(1e-3, 10.0, allow_nan=False, width=64)


def eq12_reference(x, tau, lam):
    """Paper Eq. 12 in float64 NumPy, written from the formula as printed."""
    x = np.asarray(x, np.float64)
    ax = np.abs(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        inner = x / (1.0 + lam * (1.0 - ax / tau))
    return np.where(ax > tau, x - lam * tau * np.sign(x), inner)


def huber_objective(y, x, tau, c):
    h = np.where(np.abs(y) <= tau, y**2 / (2 * tau), np.abs(y) - tau / 2)
    return 0.5 * (y - x) ** 2 + c * h


# ---------------------------------------------------------------- Eq. 12


def test_smoothed_shrinkage_matches_float64_reference_of_eq12():
    rng = np.random.default_rng(0)
    x = rng.normal(size=2000) * 0.2
    tau = rng.uniform(0.01, 0.3, size=2000)
    lam = rng.uniform(0.0, 3.0, size=2000)
    got = np.asarray(prox.smoothed_shrinkage(jnp.asarray(x, jnp.float32), tau, lam))
    np.testing.assert_allclose(got, eq12_reference(x, tau, lam), rtol=2e-6, atol=1e-7)


def test_smoothed_shrinkage_jumps_by_tau_times_lam_at_threshold():
    tau, lam = 0.5, 0.3
    at = float(prox.smoothed_shrinkage(jnp.float32(tau), tau, lam))
    above = float(prox.smoothed_shrinkage(jnp.float32(np.nextafter(tau, 1.0, dtype=np.float32)), tau, lam))
    assert at == pytest.approx(tau)  # inner branch: identity at |x| = tau
    assert above == pytest.approx(tau * (1 - lam), rel=1e-6)  # outer branch
    assert at - above == pytest.approx(tau * lam, rel=1e-5)  # the discontinuity


def test_smoothed_shrinkage_gradient_is_not_paper_eq13():
    tau, lam = 0.4, 0.7
    xs = jnp.linspace(-0.39, 0.39, 31)
    grad = jax.vmap(jax.grad(lambda x: prox.smoothed_shrinkage(x, tau, lam)))(xs)
    d = 1.0 + lam * (1.0 - jnp.abs(xs) / tau)
    np.testing.assert_allclose(grad, (1.0 + lam) / d**2, rtol=1e-5)
    eq13 = (1.0 + lam * jnp.abs(xs) / tau) / d**2
    # Eq. 13 agrees only where |x| = tau / ... never on this grid except by chance.
    assert np.max(np.abs(np.asarray(grad - eq13))) > 0.1


def test_smoothed_shrinkage_flips_sign_above_tau_when_lam_exceeds_one():
    out = prox.smoothed_shrinkage(jnp.float32(0.11), 0.1, 2.0)
    assert float(out) < 0.0


def test_smoothed_shrinkage_limits_tau_and_lam_zero_are_finite_with_gradients():
    x = jnp.array([-1.0, -1e-3, 0.0, 1e-3, 1.0])
    for tau, lam in [(0.0, 1.0), (0.5, 0.0), (0.0, 0.0)]:
        out = prox.smoothed_shrinkage(x, tau, lam)
        assert np.all(np.isfinite(out))
        g = jax.grad(lambda x, t, l: prox.smoothed_shrinkage(x, t, l).sum(), argnums=(0, 1, 2))(
            x, jnp.float32(tau), jnp.float32(lam)
        )
        assert all(np.all(np.isfinite(gi)) for gi in g), (tau, lam, g)
    np.testing.assert_array_equal(prox.smoothed_shrinkage(x, 0.5, 0.0), x)


# ---------------------------------------------------------------- Huber (corrected)


def test_huber_shrinkage_hand_computed_values():
    # tau = 0.5, lam = 1, eta = 0.5 -> c = 0.5, boundary tau + c = 1.
    x = jnp.array([-2.0, -0.5, 0.0, 0.3, 1.0, 3.0])
    want = [-1.5, -0.25, 0.0, 0.15, 0.5, 2.5]
    np.testing.assert_allclose(prox.huber_shrinkage(x, 0.5, 1.0, 0.5), want, rtol=1e-6)


@settings(max_examples=200, deadline=None)
@given(x=finite, y=finite, tau=pos, lam=pos, eta=pos)
def test_huber_shrinkage_is_odd_shrinking_and_nonexpansive(x, y, tau, lam, eta):
    with jax.enable_x64(True):
        sx = float(prox.huber_shrinkage(jnp.float64(x), tau, lam, eta))
        sy = float(prox.huber_shrinkage(jnp.float64(y), tau, lam, eta))
        s_neg = float(prox.huber_shrinkage(jnp.float64(-x), tau, lam, eta))
    assert s_neg == pytest.approx(-sx, abs=1e-12)
    assert abs(sx) <= abs(x) + 1e-12
    assert abs(sx - sy) <= abs(x - y) * (1 + 1e-12) + 1e-12
    assert np.sign(sx) in (0.0, np.sign(x))


@settings(max_examples=100, deadline=None)
@given(x=finite, tau=pos, lam=pos, eta=pos)
def test_huber_shrinkage_is_continuous(x, tau, lam, eta):
    with jax.enable_x64(True):
        c = lam * eta
        for point in (x, tau + c, -(tau + c)):  # includes the branch boundary
            d = 1e-9 * max(1.0, abs(point))
            a, b = point - d, point + d
            lo = float(prox.huber_shrinkage(jnp.float64(a), tau, lam, eta))
            hi = float(prox.huber_shrinkage(jnp.float64(b), tau, lam, eta))
            # A jump (as Eq. 12 has) would be of order tau * lam, not of order d.
            assert abs(hi - lo) <= (b - a) * (1 + 1e-6) + 1e-14 * max(1.0, abs(point))


@settings(max_examples=100, deadline=None)
@given(x=st.floats(-5.0, 5.0, width=64), tau=st.floats(0.05, 2.0), lam=st.floats(0.0, 3.0),
       eta=st.floats(0.1, 1.0))
def test_huber_shrinkage_is_the_argmin_of_its_objective(x, tau, lam, eta):
    c = eta * lam
    with jax.enable_x64(True):
        s = float(prox.huber_shrinkage(jnp.float64(x), tau, lam, eta))
    grid = np.linspace(-6.0, 6.0, 240001)  # brute force at spacing 5e-5
    ys = grid[np.argmin(huber_objective(grid, x, tau, c))]
    assert abs(s - ys) <= 1e-4
    assert huber_objective(s, x, tau, c) <= huber_objective(ys, x, tau, c) + 1e-12


@settings(max_examples=100, deadline=None)
@given(x=finite, lam=pos, eta=pos)
def test_huber_shrinkage_tends_to_soft_threshold_as_tau_goes_to_zero(x, lam, eta):
    with jax.enable_x64(True):
        st_ = float(prox.soft_threshold(jnp.float64(x), lam * eta))
        for tau in (1e-4, 1e-8):
            h = float(prox.huber_shrinkage(jnp.float64(x), tau, lam, eta))
            assert abs(h - st_) <= 2 * tau
        h0 = float(prox.huber_shrinkage(jnp.float64(x), 0.0, lam, eta))
    assert h0 == pytest.approx(st_, abs=1e-12)


def test_huber_shrinkage_limits_are_finite_in_value_and_gradient():
    x = jnp.array([-1.0, 0.0, 1e-4, 1.0])
    for tau, lam in [(0.0, 1.0), (0.5, 0.0), (0.0, 0.0)]:
        f = lambda x, t, l: prox.huber_shrinkage(x, t, l, 0.5).sum()
        assert np.all(np.isfinite(prox.huber_shrinkage(x, tau, lam)))
        grads = jax.grad(f, argnums=(0, 1, 2))(x, jnp.float32(tau), jnp.float32(lam))
        assert all(np.all(np.isfinite(g)) for g in grads), (tau, lam, grads)
    np.testing.assert_array_equal(prox.huber_shrinkage(x, 0.0, 0.0), x)


# ---------------------------------------------------------------- other operators


def test_soft_threshold_and_elastic_net_hand_computed():
    x = jnp.array([-3.0, -0.5, 0.0, 0.5, 3.0])
    np.testing.assert_allclose(prox.soft_threshold(x, 1.0), [-2.0, 0.0, 0.0, 0.0, 2.0])
    # argmin 1/2 (x - y)^2 + l1 |y| + l2/2 y^2 = soft(x, l1) / (1 + l2)
    np.testing.assert_allclose(prox.elastic_net(x, 1.0, 1.0), [-1.0, 0.0, 0.0, 0.0, 1.0])


@settings(max_examples=60, deadline=None)
@given(x=st.floats(-5.0, 5.0, width=64), l1=st.floats(0.0, 2.0), l2=st.floats(0.0, 3.0))
def test_elastic_net_is_the_argmin_of_its_objective(x, l1, l2):
    with jax.enable_x64(True):
        s = float(prox.elastic_net(jnp.float64(x), l1, l2))
    obj = lambda y: 0.5 * (x - y) ** 2 + l1 * np.abs(y) + 0.5 * l2 * y**2
    grid = np.linspace(-6.0, 6.0, 240001)
    assert obj(s) <= obj(grid).min() + 1e-9


def test_group_lasso_scales_or_zeroes_the_whole_tensor():
    x = jnp.array([[3.0, 4.0]])  # norm 5
    np.testing.assert_allclose(prox.group_lasso(x, 1.0), x * 0.8, rtol=1e-6)
    np.testing.assert_array_equal(prox.group_lasso(x, 5.0), jnp.zeros_like(x))
    np.testing.assert_array_equal(prox.group_lasso(jnp.zeros(3), 1.0), jnp.zeros(3))
    g = jax.grad(lambda x: prox.group_lasso(x, 1.0).sum())(jnp.zeros(3))
    assert np.all(np.isfinite(g))


def test_from_projection_reuses_optax_projections():
    import optax

    p = prox.from_projection(optax.projections.projection_box, 0.0, 1.0)
    np.testing.assert_array_equal(p(jnp.array([-1.0, 0.5, 2.0]), 0.1), [0.0, 0.5, 1.0])


# ---------------------------------------------------------------- shared properties

OPERATORS = {
    "smoothed_shrinkage": lambda x, a, b: prox.smoothed_shrinkage(x, a, b),
    "huber_shrinkage": lambda x, a, b: prox.huber_shrinkage(x, a, b, 0.7),
    "soft_threshold": lambda x, a, b: prox.soft_threshold(x, a),
    "elastic_net": lambda x, a, b: prox.elastic_net(x, a, b),
    "group_lasso": lambda x, a, b: prox.group_lasso(x, a),
}


class TestOperatorContracts(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_and_no_jit_agree_and_broadcast_parameters(self):
        x = jnp.linspace(-1.0, 1.0, 12).reshape(3, 4)
        a = jnp.array([0.1, 0.2, 0.3, 0.4])  # broadcasts over rows
        for name, op in OPERATORS.items():
            if name == "group_lasso":
                a_ = 0.3
            else:
                a_ = a
            got = self.variant(op)(x, a_, 0.5)
            chex.assert_shape(got, x.shape)
            np.testing.assert_allclose(got, op(x, a_, 0.5), rtol=1e-6, err_msg=name)

    def test_vmap_matches_loop(self):
        x = jnp.linspace(-1.0, 1.0, 12).reshape(3, 4)
        for name, op in OPERATORS.items():
            got = jax.vmap(lambda r: op(r, 0.3, 0.5))(x)
            want = jnp.stack([op(r, 0.3, 0.5) for r in x])
            np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("name", sorted(OPERATORS))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_operators_preserve_dtype(name, dtype):
    x = jnp.linspace(-1.0, 1.0, 8, dtype=dtype)
    out = OPERATORS[name](x, jnp.float32(0.3), jnp.float32(0.5))
    assert out.dtype == dtype
    ref = OPERATORS[name](x.astype(jnp.float32), 0.3, 0.5)
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=2e-2)


@pytest.mark.parametrize("name", sorted(set(OPERATORS) - {"group_lasso"}))
def test_nan_appears_only_where_the_input_had_one(name):
    x = jnp.array([-1.0, jnp.nan, 0.0, 0.05, 2.0])
    out = OPERATORS[name](x, 0.1, 0.5)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(x))
    g = jax.grad(lambda x: jnp.nansum(OPERATORS[name](x, 0.1, 0.5)))(x)
    assert np.all(np.isfinite(np.asarray(g)[~np.isnan(np.asarray(x))]))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: prox.soft_threshold(jnp.ones(2), -0.1), "threshold must be >= 0"),
        (lambda: prox.elastic_net(jnp.ones(2), -1.0, 0.0), "l1 must be >= 0"),
        (lambda: prox.elastic_net(jnp.ones(2), 0.0, -1.0), "l2 must be >= 0"),
        (lambda: prox.huber_shrinkage(jnp.ones(2), -1.0, 1.0), "tau must be >= 0"),
        (lambda: prox.smoothed_shrinkage(jnp.ones(2), 1.0, -1.0), "lam must be >= 0"),
        (lambda: prox.group_lasso(jnp.ones(2), jnp.ones(2)), "strength must be a scalar"),
        (lambda: prox.soft_threshold(jnp.ones(2, jnp.int32), 0.1), "floating-point"),
    ],
)
def test_bad_input_raises_error_naming_the_problem(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
