"""Tests for mapa_jax.tasks.datasets: shapes, splits, determinism, standardization."""

import random

import numpy as np
import pytest

from mapa_jax import tasks
from mapa_jax.tasks import datasets

SOURCE_ROWS = {"digits": 1797, "breast_cancer": 569, "mnist1d": 5000, "boston": 506, "diabetes": 442}


# ------------------------------------------------------------------ datasets


@pytest.mark.parametrize("name", datasets.dataset_names())
def test_dataset_shapes_dtypes_and_no_nan(name):
    d = tasks.load_dataset(name)
    assert sum(len(d.y[s]) for s in tasks.SPLITS) == SOURCE_ROWS[name]
    for s in tasks.SPLITS:
        x, y = d.x[s], d.y[s]
        assert x.dtype == np.float32 and x.shape == (len(y), *d.input_shape)
        assert np.all(np.isfinite(x)) and np.all(np.isfinite(y))
        if d.kind == "classification":
            assert y.dtype == np.int32 and y.min() >= 0 and y.max() < d.num_classes
        else:
            assert y.dtype == np.float32 and d.num_outputs == 1
    if d.kind == "classification":  # every class is seen in training
        assert set(np.unique(d.y["train"])) == set(range(d.num_classes))


@pytest.mark.parametrize("name", datasets.dataset_names())
def test_dataset_splits_are_disjoint_cover_all_rows_and_are_60_20_20(name):
    d = tasks.load_dataset(name)
    idx = [set(d.indices[s].tolist()) for s in tasks.SPLITS]
    assert not (idx[0] & idx[1]) and not (idx[0] & idx[2]) and not (idx[1] & idx[2])
    assert set().union(*idx) == set(range(SOURCE_ROWS[name]))
    fractions = np.array([len(i) for i in idx]) / SOURCE_ROWS[name]
    np.testing.assert_allclose(fractions, datasets.SPLIT_FRACTIONS, atol=0.01)


@pytest.mark.parametrize("name", datasets.dataset_names())
def test_dataset_is_deterministic_and_leaves_global_rngs_alone(name):
    np.random.seed(123)
    random.seed(123)
    expect_np, expect_py = np.random.get_state()[1].copy(), random.getstate()
    fresh = datasets._LOADERS[name]()  # uncached rebuild
    assert np.array_equal(np.random.get_state()[1], expect_np) and random.getstate() == expect_py
    cached = tasks.load_dataset(name)
    assert cached is tasks.load_dataset(name)
    for s in tasks.SPLITS:
        np.testing.assert_array_equal(fresh.indices[s], cached.indices[s])
        np.testing.assert_array_equal(fresh.x[s], cached.x[s])
        np.testing.assert_array_equal(fresh.y[s], cached.y[s])


@pytest.mark.parametrize("name", datasets.dataset_names())
def test_features_are_standardized_with_train_statistics(name):
    d = tasks.load_dataset(name)
    x = d.x["train"].reshape(len(d.x["train"]), -1).astype(np.float64)
    np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-5)
    std = x.std(0)
    varying = d.feature_std.reshape(-1) != 1.0  # constant-on-train features are only centred
    np.testing.assert_allclose(std[varying], 1.0, rtol=1e-4)
    np.testing.assert_allclose(std[~varying], 0.0, atol=1e-6)
    if d.kind == "regression":
        assert abs(d.y["train"].mean()) < 1e-5 and abs(d.y["train"].std() - 1.0) < 1e-4
    # Held-out splits use the train statistics, so they are not exactly standardized.
    held = d.x["test"].reshape(len(d.x["test"]), -1)
    assert not np.allclose(held.mean(0), 0.0, atol=1e-5)


def test_split_indices_are_fixed_by_the_seed():
    a, b = datasets.split_indices(100), datasets.split_indices(100)
    for s in tasks.SPLITS:
        np.testing.assert_array_equal(a[s], b[s])
    assert not np.array_equal(datasets.split_indices(100, seed=1)["train"], a["train"])
