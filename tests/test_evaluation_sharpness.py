"""PGA sharpness (mapa_jax.evaluation.sharpness) against closed forms in float64."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mapa_jax.evaluation import RADII, pga_sharpness


@pytest.fixture(autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


def _quadratic():
    """L = x^T A x / 2 over a tree of two leaves, A = diag(3, 1, 0.5): the maximum over the ball is 1.5 r^2."""
    params = {"a": jnp.zeros(2, jnp.float64), "b": jnp.zeros(1, jnp.float64)}
    diag = {"a": jnp.array([1.0, 3.0]), "b": jnp.array([0.5])}
    return params, lambda p: 0.5 * sum(jnp.sum(diag[k] * p[k] ** 2) for k in p)


class TestPgaSharpnessQuadratic(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_pga_sharpness_of_a_quadratic_is_half_the_top_eigenvalue_times_r_squared(self):
        with jax.enable_x64(True):
            params, loss = _quadratic()
            for r in RADII:
                s = self.variant(lambda p, r=r: pga_sharpness(loss, p, r, steps=60))(params)
                assert s.dtype == jnp.float64
                np.testing.assert_allclose(float(s), 1.5 * r**2, rtol=1e-6)


def test_pga_sharpness_of_a_linear_loss_is_r_times_the_gradient_norm_and_stays_in_the_ball():
    c = {"w": jnp.array([[1.0, -2.0], [0.5, 0.0]]), "v": jnp.array([2.0])}
    params = {"w": jnp.ones((2, 2), jnp.float64), "v": jnp.zeros(1, jnp.float64)}
    loss = lambda p: sum(jnp.sum(c[k] * p[k]) for k in p)  # noqa: E731
    norm = float(np.sqrt(1 + 4 + 0.25 + 4))
    for r in (0.01, 1.0):
        s = float(pga_sharpness(loss, params, r, steps=40))
        # the maximizer is r c / ||c||; a perturbation outside the ball would give more than r ||c||
        assert s <= r * norm * (1 + 1e-12)
        np.testing.assert_allclose(s, r * norm, rtol=1e-9)


def test_pga_sharpness_is_zero_for_a_constant_loss_and_grows_with_the_radius():
    params = {"w": jnp.ones(3, jnp.float64)}
    assert float(pga_sharpness(lambda p: jnp.sum(p["w"] * 0.0) + 1.0, params, 0.1)) == 0.0
    loss = lambda p: jnp.sum(jnp.cos(p["w"]))  # noqa: E731  ascent goes toward w = 0, where cos peaks
    values = [float(pga_sharpness(loss, {"w": jnp.full(3, 0.5, jnp.float64)}, r)) for r in RADII]
    assert all(a < b for a, b in zip(values, values[1:])) and values[0] > 0, values


@pytest.mark.parametrize("kw, match", [
    (dict(radius=0.0), "radius must be a finite number > 0"),
    (dict(radius=float("nan")), "radius must be a finite number > 0"),
    (dict(radius=True), "radius must be a finite number > 0"),
    (dict(radius=0.1, steps=0), "steps must be an integer >= 1"),
    (dict(radius=0.1, steps=2.0), "steps must be an integer >= 1"),
    (dict(radius=0.1, step_fraction=-1.0), "step_fraction must be a finite number > 0"),
])
def test_pga_sharpness_names_a_bad_argument(kw, match):
    params, loss = _quadratic()
    with pytest.raises(ValueError, match=match):
        pga_sharpness(loss, params, **kw)


def test_pga_sharpness_refuses_params_without_floating_arrays():
    with pytest.raises(ValueError, match="non-empty pytree of floating-point arrays"):
        pga_sharpness(lambda p: 0.0, {"n": jnp.arange(3)}, 0.1)
    with pytest.raises(ValueError, match="non-empty pytree of floating-point arrays"):
        pga_sharpness(lambda p: 0.0, {}, 0.1)
