"""Tests for mapa_jax.tasks.registry: families, ad-hoc families, caching, errors for bad names."""

import re

import jax
import pytest

from mapa_jax import tasks


# ---------------------------------------------------------- registry, errors


def test_families_have_the_documented_sizes_and_tasks_are_cached():
    assert len(tasks.meta_train_tasks().tasks) == 15
    assert len(tasks.meta_test_tasks().tasks) == 5
    assert {t.name for t in tasks.synthetic_tasks().tasks} >= {
        "synthetic/lasso", "synthetic/quadratic", "synthetic/rosenbrock", "synthetic/sparse_logreg"}
    for name in tasks.family_names():
        fam = tasks.family(name)
        assert fam.name == name and fam.build(fam.sample(jax.random.key(0))) in fam.tasks
    assert tasks.family("meta_train").tasks[0] is tasks.meta_train_tasks().tasks[0]
    assert tasks.get_task(tasks.TINY_TASK) in tasks.family("smoke").tasks
    assert set(tasks.family_names()) >= {"meta_train", "meta_test", "synthetic"}


def test_bad_names_raise_errors_listing_the_known_names():
    with pytest.raises(KeyError, match=re.escape("digits/mlp_relu_1x32")):
        tasks.get_task("digits/no_such_model")
    with pytest.raises(KeyError, match="meta_train"):
        tasks.family("meta_validation")
    with pytest.raises(KeyError, match="boston"):
        tasks.load_dataset("mnist")
    with pytest.raises(KeyError, match="mlp_relu_1x32"):
        tasks.get_architecture("transformer")
    task = tasks.get_task(tasks.TINY_TASK)
    with pytest.raises(ValueError, match="validation"):
        task.evaluate(task.init(jax.random.key(0)), "valid")


def test_a_spec_names_a_family_or_an_ad_hoc_family_of_tasks():
    assert tasks.family_from_spec("smoke") == tasks.family("smoke")
    fam = tasks.family_from_spec(f" {tasks.TINY_TASK}, diabetes/mlp_leaky_relu_4x16,{tasks.TINY_TASK}")
    assert fam.task_names == (tasks.TINY_TASK, "diabetes/mlp_leaky_relu_4x16")  # in order, once each
    with pytest.raises(ValueError, match="no tasks in ' , '"):
        tasks.family_from_spec(" , ")
    with pytest.raises(KeyError, match="unknown task 'digits/nope'"):
        tasks.family_from_spec("digits/nope")
