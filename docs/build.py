"""Builds the API reference of mapa_jax as HTML with pdoc, and checks it.

    python3 docs/build.py              # writes docs/api/ (open docs/api/index.html)
    python3 docs/build.py -o DIR       # elsewhere

Documents ``mapa_jax`` and each public submodule (names without a leading
underscore), Google-style docstrings with reST roles (``:func:`name```).
Exits 1, listing the problems, when

* pdoc warns: a module that does not import, a name in ``__all__`` that does
  not resolve, a docstring that cannot be processed; and a type annotation that
  does not evaluate, except where pdoc evaluates it in the wrong namespace (the
  name exists in the module that defines the object) or it is optax's
  recursive ``ArrayTree`` alias, which no tool evaluates;
* a cross-reference role in a docstring (``:func:``, ``:class:``, ``:mod:``,
  ``:data:``, ``:meth:``, ``:attr:``, ``:exc:``, ``:obj:``) names nothing: it is
  resolved as pdoc links it, as a full dotted path, or relative to the
  docstring's module or class.

Needs pdoc (in the ``test`` extra) and the ``train`` extra (the meta-training
modules import orbax and tqdm).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pathlib
import pkgutil
import re
import sys
import types
import warnings
from typing import Any, Iterator, Optional

ROOT = pathlib.Path(__file__).resolve().parents[1]
ROLE = re.compile(r"(?::py)?:(mod|func|data|const|class|meth|attr|exc|obj):`~?([^`<>]+?)`")
#: Names pdoc cannot evaluate in type annotations through no fault of ours.
ROLE_TILDE = re.compile(r"((?::py)?:(?:mod|func|data|const|class|meth|attr|exc|obj):)`~")
UNEVALUABLE = {"ArrayTree"}  # optax.Params = ArrayTree, a recursive Union of ForwardRef('ArrayTree')


def public_modules(package: str = "mapa_jax") -> list[str]:
    """``package`` and every submodule whose dotted name has no part starting with ``_``,
    except deprecated aliases (a module docstring that starts with "Deprecated")."""
    pkg = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(pkg.__path__, prefix=package + "."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        if (importlib.import_module(info.name).__doc__ or "").startswith("Deprecated"):
            continue
        names.append(info.name)
    return sorted(names)


def _specs(modules: list[str]) -> list[str]:
    """pdoc's module specifications for exactly ``modules``: a package's spec adds its
    submodules (those of its ``__all__``, or all), so each module is given once, and what
    a spec adds beyond ``modules`` is excluded with ``!NAME$``."""
    import pdoc.extract

    specs: list[str] = []
    covered: set[str] = set()
    for name in modules:
        if name not in covered:
            specs.append(name)
            covered |= set(pdoc.extract.walk_specs([name]))
    return specs + [f"!{re.escape(name)}$" for name in sorted(covered - set(modules))]


def _without_tildes(rst):
    """pdoc's reST conversion, reading Sphinx's ``:role:`~a.b.c``` as ``:role:`a.b.c```
    (pdoc keeps the tilde in the text and does not link it)."""

    def convert(contents, source_file):
        return rst(ROLE_TILDE.sub(r"\1`", contents), source_file)

    return convert


def _resolve(path: str) -> Any:
    """The object at a dotted path (longest importable module prefix, then attributes); raises LookupError."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            continue
        return obj
    raise LookupError(path)


def _resolves(name: str, module: types.ModuleType, owner: Optional[type]) -> bool:
    name = name.strip().removesuffix("()")
    candidates = [name, f"{module.__name__}.{name}"]
    if owner is not None:
        candidates.append(f"{owner.__module__}.{owner.__qualname__}.{name}")
    head, _, rest = name.partition(".")
    if head in vars(module):  # a name the module imported, e.g. `optax.chain`, `np.ndarray`
        obj = vars(module)[head]
        try:
            for attr in rest.split(".") if rest else ():
                obj = getattr(obj, attr)
            return True
        except AttributeError:
            pass
    for c in candidates:
        try:
            _resolve(c)
            return True
        except LookupError:
            pass
    return False


def _docstrings(module: types.ModuleType) -> Iterator[tuple[str, str, Optional[type]]]:
    """``(qualified name, docstring, owning class or None)`` of the module and what it defines."""
    yield module.__name__, inspect.getdoc(module) or "", None
    seen: set[int] = set()

    def members(obj: Any, prefix: str, owner: Optional[type]) -> Iterator[tuple[str, str, Optional[type]]]:
        for name, value in vars(obj).items():
            target = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
            if getattr(target, "__module__", None) != module.__name__ or id(target) in seen:
                continue
            if not (inspect.isfunction(target) or inspect.isclass(target)):
                continue
            seen.add(id(target))
            qual = f"{prefix}.{name}"
            own = inspect.cleandoc(target.__doc__) if isinstance(target.__doc__, str) else ""  # not inherited
            yield qual, own, owner if not inspect.isclass(target) else target
            if inspect.isclass(target):
                yield from members(target, qual, target)

    yield from members(module, module.__name__, None)


def broken_references(modules: list[str]) -> list[str]:
    """``"where: :role:`name`"`` for every cross-reference role that names nothing."""
    out = []
    for modname in modules:
        module = importlib.import_module(modname)
        for where, doc, owner in _docstrings(module):
            for role, name in ROLE.findall(doc):
                if not _resolves(name, module, owner):
                    out.append(f"{where}: :{role}:`{name}`")
    return out


def _pdoc_problem(message: str) -> Optional[str]:
    """The warning as a problem, or None for an annotation pdoc cannot evaluate through no fault of ours."""
    m = re.match(r"Error parsing type annotation .* for ([\w.]+)\. Import of (\w+) failed", message)
    if not m:
        return message
    fullname, missing = m.groups()
    if missing in UNEVALUABLE:
        return None
    # pdoc evaluates a NamedTuple's generated __init__ (and re-exported names) in another
    # namespace; the annotation is fine when the defining module has the name.
    parts = fullname.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = _resolve(".".join(parts[:i]))
        except LookupError:
            continue
        mod = sys.modules.get(getattr(obj, "__module__", "") or "")
        if mod is not None and missing in vars(mod):
            return None
    return message


def build(output_dir: str | pathlib.Path, modules: Optional[list[str]] = None) -> list[str]:
    """Writes the HTML into ``output_dir``; returns the problems (empty: all good)."""
    import pdoc
    import pdoc.render

    import mapa_jax

    modules = modules or public_modules()
    # Names the package loads lazily (module __getattr__) are not in its __dict__, where
    # pdoc looks for the names of __all__: load them first.
    for name in getattr(mapa_jax, "__all__", []):
        if name not in vars(mapa_jax):
            setattr(mapa_jax, name, getattr(mapa_jax, name))
    import pdoc.docstrings

    pdoc.render.configure(docformat="google", search=True, show_source=False)
    original = pdoc.docstrings.rst
    pdoc.docstrings.rst = _without_tildes(original)
    pdoc.docstrings.convert.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pdoc.pdoc(*_specs(modules), output_directory=pathlib.Path(output_dir))
    finally:
        pdoc.docstrings.rst = original
        pdoc.docstrings.convert.cache_clear()
    problems = []
    for w in caught:
        if issubclass(w.category, (DeprecationWarning, FutureWarning)) and "mapa_jax" not in str(w.message):
            continue  # third-party deprecations on import
        msg = _pdoc_problem(str(w.message).splitlines()[0] if "Traceback" not in str(w.message) else str(w.message))
        if msg is not None:
            problems.append(f"pdoc: {msg}")
    problems += [f"broken reference in {r}" for r in broken_references(modules)]
    return problems


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output-dir", default=str(ROOT / "docs" / "api"))
    args = ap.parse_args(argv)
    problems = build(args.output_dir)
    for p in problems:
        print(p, file=sys.stderr)
    print(f"wrote {args.output_dir}/index.html" + (f"; {len(problems)} problems" if problems else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
