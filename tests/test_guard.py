"""Tests for mj.skip_nonfinite (mapa_jax.guard)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import mapa_jax as mj
from mapa_jax import guard


def _params():
    return {
        "dense": {"kernel": jnp.array([[0.5, -0.02], [0.03, -1.0]]), "bias": jnp.array([0.01, -0.3])},
        "out": {"kernel": jnp.array([[0.2], [-0.4]])},
    }


def _grads(step=0):
    base = {
        "dense": {"kernel": jnp.array([[1.0, 0.5], [-2.0, 0.1]]), "bias": jnp.array([0.3, -0.1])},
        "out": {"kernel": jnp.array([[-0.5], [0.25]])},
    }
    return jax.tree.map(lambda g: g * (1.0 + 0.3 * step) - 0.05 * step, base)


def _poison(grads, bad, path=("dense", "bias"), index=1):
    """``grads`` with one entry of one tensor set to ``bad``."""
    out = jax.tree.map(lambda g: g, grads)
    leaf = out[path[0]][path[1]]
    out[path[0]][path[1]] = leaf.reshape(-1).at[index].set(bad).reshape(leaf.shape)
    return out


# Stateless and scalar-state optimizers take the `where` select, those with
# per-parameter state the `cond` one (see mapa_jax/guard.py); both are here.
OPTIMIZERS = {
    "sgd": lambda: optax.sgd(0.1),
    "momentum": lambda: optax.sgd(0.1, momentum=0.9),
    "adamw": lambda: optax.adamw(0.1, weight_decay=0.01),
    "prox_adam": lambda: mj.prox_adam(0.1, l1=0.05),
}
BAD = {"nan": jnp.nan, "inf": jnp.inf, "-inf": -jnp.inf}


def _assert_trees_identical(a, b):
    chex.assert_trees_all_equal_structs(a, b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_the_test_optimizers_cover_both_selects():
    p = _params()
    paths = {name: guard._select_with_where(make().init(p), p) for name, make in OPTIMIZERS.items()}
    assert paths == {"sgd": True, "momentum": False, "adamw": False, "prox_adam": False}


class TestSkipNonfinite(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(name=tuple(OPTIMIZERS), bad=tuple(BAD))
    def test_nonfinite_entry_gives_zero_update_unchanged_inner_state_and_counts(self, name, bad):
        tx = mj.skip_nonfinite(OPTIMIZERS[name]())
        update = self.variant(tx.update)
        p = _params()
        _, state = update(_grads(0), tx.init(p), p)  # one finite step: a non-trivial state
        assert int(state.notfinite_count) == 0 and bool(state.last_finite)
        u, new = update(_poison(_grads(1), BAD[bad]), state, p)
        chex.assert_trees_all_equal_shapes_and_dtypes(u, p)
        for leaf in jax.tree.leaves(u):
            np.testing.assert_array_equal(leaf, np.zeros_like(leaf))
        _assert_trees_identical(new.inner_state, state.inner_state)
        assert new.notfinite_count.dtype == jnp.int32 and int(new.notfinite_count) == 1
        assert new.last_finite.dtype == jnp.bool_ and not bool(new.last_finite)
        # A finite step after it is taken again, and the counter stays.
        u, newer = update(_grads(1), new, p)
        assert bool(newer.last_finite) and int(newer.notfinite_count) == 1
        assert any(bool(jnp.any(leaf != 0)) for leaf in jax.tree.leaves(u))

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*OPTIMIZERS)
    def test_finite_steps_are_bit_identical_to_the_unwrapped_optimizer(self, name):
        # Guarded, with two non-finite steps in between; unwrapped, without them.
        tx, guarded = OPTIMIZERS[name](), mj.skip_nonfinite(OPTIMIZERS[name]())
        update, guarded_update = self.variant(tx.update), self.variant(guarded.update)
        p_ref, p = _params(), _params()
        s_ref, s = tx.init(p_ref), guarded.init(p)
        for step in range(4):
            if step in (1, 2):
                _, s = guarded_update(_poison(_grads(step), jnp.nan, ("out", "kernel"), step - 1), s, p)
            u_ref, s_ref = update(_grads(step), s_ref, p_ref)
            u, s = guarded_update(_grads(step), s, p)
            _assert_trees_identical(u, u_ref)
            _assert_trees_identical(s.inner_state, s_ref)
            p_ref, p = optax.apply_updates(p_ref, u_ref), optax.apply_updates(p, u)
        assert int(s.notfinite_count) == 2

    @chex.variants(with_jit=True, without_jit=True)
    def test_chained_before_and_after_other_transforms(self):
        # adam as a chain with the guard on its first link equals guarded adam.
        chained = optax.chain(mj.skip_nonfinite(optax.scale_by_adam()), optax.scale(-0.1))
        whole = optax.chain(optax.clip_by_global_norm(10.0), mj.skip_nonfinite(optax.adam(0.1)))
        ref = optax.adam(0.1)
        p = _params()
        sc, sw, sr = chained.init(p), whole.init(p), ref.init(p)
        for step in range(3):
            g = _poison(_grads(step), jnp.inf) if step == 1 else _grads(step)
            uc, sc = self.variant(chained.update)(g, sc, p)
            uw, sw = self.variant(whole.update)(g, sw, p)
            if step == 1:
                for leaf in jax.tree.leaves((uc, uw)):
                    np.testing.assert_array_equal(leaf, np.zeros_like(leaf))
                continue
            ur, sr = self.variant(ref.update)(g, sr, p)
            chex.assert_trees_all_close(uc, ur, rtol=1e-6)
            chex.assert_trees_all_close(uw, ur, rtol=1e-6)
        assert int(sc[0].notfinite_count) == 1 and int(sw[1].notfinite_count) == 1
        assert int(sc[0].inner_state.count) == 2

    @chex.variants(with_jit=True, without_jit=True)
    def test_under_masked_the_guard_sees_only_the_masked_tensors(self):
        mask = {"dense": {"kernel": True, "bias": False}, "out": {"kernel": True}}
        tx = optax.masked(mj.skip_nonfinite(optax.adam(0.1)), mask)
        p = _params()
        update = self.variant(tx.update)
        _, s0 = update(_grads(0), tx.init(p), p)
        # NaN in a masked tensor: its tensors get zeros, the others pass through.
        u, s1 = update(_poison(_grads(1), jnp.nan, ("out", "kernel"), 0), s0, p)
        np.testing.assert_array_equal(u["dense"]["kernel"], np.zeros((2, 2)))
        np.testing.assert_array_equal(u["out"]["kernel"], np.zeros((2, 1)))
        np.testing.assert_array_equal(u["dense"]["bias"], _grads(1)["dense"]["bias"])
        _assert_trees_identical(s1.inner_state.inner_state, s0.inner_state.inner_state)
        assert int(s1.inner_state.notfinite_count) == 1
        # NaN outside the mask is not the guard's: passed through, the step taken.
        u, s2 = update(_poison(_grads(1), jnp.nan), s0, p)
        assert bool(jnp.isnan(u["dense"]["bias"][1])) and bool(jnp.all(u["dense"]["kernel"] != 0))
        assert int(s2.inner_state.notfinite_count) == 0

    @chex.variants(with_jit=True, without_jit=True)
    def test_guarding_a_masked_optimizer(self):
        mask = {"dense": {"kernel": True, "bias": False}, "out": {"kernel": False}}
        inner = optax.masked(optax.adam(0.1), mask)
        tx, ref = mj.skip_nonfinite(inner), optax.masked(optax.adam(0.1), mask)
        p = _params()
        u, s = self.variant(tx.update)(_grads(0), tx.init(p), p)
        u_ref, _ = self.variant(ref.update)(_grads(0), ref.init(p), p)
        _assert_trees_identical(u, u_ref)
        # The guard reads every gradient, also those the mask passes through.
        u, s1 = self.variant(tx.update)(_poison(_grads(1), -jnp.inf), s, p)
        for leaf in jax.tree.leaves(u):
            np.testing.assert_array_equal(leaf, np.zeros_like(leaf))
        _assert_trees_identical(s1.inner_state, s.inner_state)

    @chex.variants(with_jit=True, without_jit=True)
    def test_value_and_extra_args_pass_through(self):
        def init(params):
            del params
            return {"value": jnp.zeros([]), "other": jnp.zeros([])}

        def update(updates, state, params=None, *, value, other=0.0, **extra_args):
            del params, extra_args
            return jax.tree.map(lambda g: -value * g, updates), {"value": value, "other": jnp.asarray(other, jnp.float32)}

        tx = mj.skip_nonfinite(optax.GradientTransformationExtraArgs(init, update))
        p = _params()
        u, s = self.variant(tx.update)(_grads(0), tx.init(p), p, value=jnp.float32(2.0), other=3.0)
        chex.assert_trees_all_close(u, jax.tree.map(lambda g: -2.0 * g, _grads(0)))
        assert float(s.inner_state["value"]) == 2.0 and float(s.inner_state["other"]) == 3.0
        _, s1 = self.variant(tx.update)(_poison(_grads(1), jnp.nan), s, p, value=jnp.float32(5.0), other=7.0)
        _assert_trees_identical(s1.inner_state, s.inner_state)

    @chex.variants(with_jit=True, without_jit=True)
    def test_value_reaches_reduce_on_plateau_and_a_skip_leaves_it(self):
        tx = mj.skip_nonfinite(optax.chain(optax.sgd(1.0), optax.contrib.reduce_on_plateau(patience=1, factor=0.5)))
        ref = optax.chain(optax.sgd(1.0), optax.contrib.reduce_on_plateau(patience=1, factor=0.5))
        p = _params()
        s, s_ref = tx.init(p), ref.init(p)
        for step, loss in enumerate([1.0, 1.0, 1.0, 1.0]):
            if step == 2:
                _, s = self.variant(tx.update)(_poison(_grads(step), jnp.nan), s, p, value=jnp.float32(9.0))
            u, s = self.variant(tx.update)(_grads(step), s, p, value=jnp.float32(loss))
            u_ref, s_ref = self.variant(ref.update)(_grads(step), s_ref, p, value=jnp.float32(loss))
            _assert_trees_identical(u, u_ref)
            _assert_trees_identical(s.inner_state, s_ref)
        assert float(s.inner_state[1].scale) < 1.0  # the plateau was seen: value arrived

    @chex.variants(with_jit=True, without_jit=True)
    def test_prox_adam_with_value(self):
        ref = mj.prox_adam(0.1, l1=0.05)
        tx = mj.skip_nonfinite(ref)
        p = _params()
        u, s = self.variant(tx.update)(_grads(0), tx.init(p), p, value=jnp.float32(1.0))
        u_ref, s_ref = self.variant(ref.update)(_grads(0), ref.init(p), p, value=jnp.float32(1.0))
        _assert_trees_identical(u, u_ref)
        _assert_trees_identical(s.inner_state, s_ref)


def test_train_loop_under_jit_with_donation_skips_only_the_bad_steps():
    tx, ref = mj.skip_nonfinite(optax.adamw(0.05)), optax.adamw(0.05)

    def make_step(t):
        def step(p, s, g):
            u, s = t.update(g, s, p)
            return optax.apply_updates(p, u), s

        return jax.jit(step, donate_argnums=(0, 1))

    step, ref_step = make_step(tx), make_step(ref)
    p, s = _params(), tx.init(_params())
    p_ref, s_ref = _params(), ref.init(_params())
    for i in range(5):
        if i % 2:
            p, s = step(p, s, _poison(_grads(i), jnp.nan))
        p, s = step(p, s, _grads(i))
        p_ref, s_ref = ref_step(p_ref, s_ref, _grads(i))
    # Not bit for bit: XLA fuses the update into apply_updates differently.
    chex.assert_trees_all_close(p, p_ref, rtol=1e-6)
    assert int(s.notfinite_count) == 2 and int(s.inner_state[0].count) == 5


def test_no_gradients_is_a_finite_step():
    tx = mj.skip_nonfinite(optax.sgd(0.1))
    u, s = tx.update({}, tx.init({}), {})
    assert u == {} and bool(s.last_finite)


@pytest.mark.parametrize(
    "bad, hint",
    [
        (optax.adam, "a function: call it"),
        ("adam", "got str"),
        (None, "got NoneType"),
        ((lambda p: (), lambda u, s, p=None: (u, s)), "got tuple"),
    ],
)
def test_bad_tx_raises_type_error_naming_the_argument(bad, hint):
    with pytest.raises(TypeError, match="skip_nonfinite: tx must be an optax.GradientTransformation") as e:
        mj.skip_nonfinite(bad)
    assert hint in str(e.value)


def test_public_api():
    assert mj.skip_nonfinite is guard.skip_nonfinite
    assert {"skip_nonfinite", "SkipNonfiniteState"} <= set(mj.__all__)
    state = mj.skip_nonfinite(optax.sgd(0.1)).init(_params())
    assert isinstance(state, mj.SkipNonfiniteState)
    assert state._fields == ("inner_state", "notfinite_count", "last_finite")
