"""The API reference (docs/build.py, pdoc) builds without warnings or broken cross-references."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("docs_build", ROOT / "docs" / "build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)


def test_the_api_reference_builds_with_no_problems(tmp_path):
    problems = build.build(tmp_path)
    assert problems == []
    assert (tmp_path / "index.html").is_file() and (tmp_path / "mapa_jax.html").is_file()


def test_a_role_that_names_nothing_is_reported():
    import types

    module = types.ModuleType("mapa_jax_fake_doc")
    module.__doc__ = "See :func:`no_such_function_anywhere` and :mod:`mapa_jax.prox`."
    import sys

    sys.modules[module.__name__] = module
    try:
        assert build.broken_references([module.__name__]) == [
            "mapa_jax_fake_doc: :func:`no_such_function_anywhere`"]
    finally:
        del sys.modules[module.__name__]
