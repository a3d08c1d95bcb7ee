"""Re-executes the notebooks under notebooks/ with nbclient, at their full configuration.

The committed notebooks carry their outputs (so that the plots show without running
anything); this script is the command that produced them::

    python3 notebooks/execute.py                      # re-execute all three, write them in place
    python3 notebooks/execute.py proximal_operators   # only the named ones (with or without .ipynb)
    python3 notebooks/execute.py --check              # re-execute into memory, compare, write nothing

Each notebook runs in a fresh ``python3`` kernel whose working directory is a new
temporary folder (the notebooks write any files relative to it, so nothing lands in
the repository), with ``MAPA_NOTEBOOK_QUICK`` removed from its environment: the full
configuration. ``tests/test_notebooks.py`` runs the same notebooks with
``MAPA_NOTEBOOK_QUICK=1``, their shortened configuration.

``--check`` compares every number in the ``text/plain`` and stream (stdout) outputs
of each code cell with the committed one, within a relative tolerance of ``--rtol``
(default 1e-3; absolute 1e-6 near zero), and exits 1 listing the cells that differ
(a different count of numbers is a difference too). Wall-clock times, a number
followed by `` s`` (as in ``9.5 s``), are not compared, nor are hexadecimal
addresses. Images are not compared.
"""

from __future__ import annotations

import argparse
import copy
import os
import pathlib
import re
import sys
import tempfile
import time

import nbclient
import nbformat

HERE = pathlib.Path(__file__).resolve().parent
NOTEBOOKS = ("learned_dynamics", "proximal_operators", "meta_train_your_own")
QUICK_ENV = "MAPA_NOTEBOOK_QUICK"

# A decimal number (sign, digits, fraction, exponent); not part of a word or a hex literal.
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w.])")
_SECONDS = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)? s\b")
_HEX = re.compile(r"0x[0-9a-fA-F]+")


def execute(nb: nbformat.NotebookNode, *, quick: bool, timeout: int = 600, cwd: str | None = None) -> nbformat.NotebookNode:
    """Executes a copy of ``nb`` in a fresh kernel; returns the executed copy.

    ``quick`` sets ``MAPA_NOTEBOOK_QUICK=1`` in the kernel's environment (the kernel
    inherits this process's); otherwise the variable is removed. The kernel's working
    directory is ``cwd`` (default: a new temporary folder, removed afterwards).
    """
    nb = copy.deepcopy(nb)
    previous = os.environ.get(QUICK_ENV)
    if quick:
        os.environ[QUICK_ENV] = "1"
    else:
        os.environ.pop(QUICK_ENV, None)
    try:
        with tempfile.TemporaryDirectory(prefix="mapa_notebook_") as tmp:
            client = nbclient.NotebookClient(
                nb, timeout=timeout, kernel_name="python3", record_timing=False, resources={"metadata": {"path": cwd or tmp}}
            )
            client.execute()
    finally:
        if previous is None:
            os.environ.pop(QUICK_ENV, None)
        else:
            os.environ[QUICK_ENV] = previous
    return nb


def output_text(cell: nbformat.NotebookNode) -> str:
    """The ``text/plain`` and stdout text of a code cell's outputs, concatenated."""
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            if out.get("name") == "stdout":
                parts.append(out["text"])
        elif "data" in out and "text/plain" in out["data"]:
            parts.append(out["data"]["text/plain"])
    return "".join(p if isinstance(p, str) else "".join(p) for p in parts)


def numbers(text: str) -> list[float]:
    """The numbers of ``text``, wall-clock times and hex addresses left out."""
    text = _HEX.sub(" ", _SECONDS.sub(" ", text))
    return [float(m.group()) for m in _NUMBER.finditer(text)]


def compare(committed: nbformat.NotebookNode, fresh: nbformat.NotebookNode, rtol: float = 1e-3, atol: float = 1e-6) -> list[str]:
    """Differences between the numbers of two executions of one notebook, one line per cell."""
    diffs = []
    pairs = [(a, b) for a, b in zip(committed.cells, fresh.cells) if a.cell_type == "code"]
    for a, b in pairs:
        cid = a.get("id", "?")
        x, y = numbers(output_text(a)), numbers(output_text(b))
        if len(x) != len(y):
            diffs.append(f"cell {cid}: {len(x)} numbers committed, {len(y)} now")
            continue
        bad = [(u, v) for u, v in zip(x, y) if abs(u - v) > max(atol, rtol * max(abs(u), abs(v)))]
        if bad:
            shown = ", ".join(f"{u:g} -> {v:g}" for u, v in bad[:5])
            diffs.append(f"cell {cid}: {len(bad)} of {len(x)} numbers differ ({shown}{', ...' if len(bad) > 5 else ''})")
    return diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help=f"notebooks to run (default: {', '.join(NOTEBOOKS)})")
    ap.add_argument("--check", action="store_true", help="re-execute into memory and compare numbers; write nothing")
    ap.add_argument("--rtol", type=float, default=1e-3)
    ap.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = ap.parse_args(argv)
    names = [n.removesuffix(".ipynb") for n in args.names] or list(NOTEBOOKS)
    failed = []
    for name in names:
        path = HERE / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        t0 = time.perf_counter()
        fresh = execute(nb, quick=False, timeout=args.timeout)
        took = time.perf_counter() - t0
        if args.check:
            diffs = compare(nb, fresh, rtol=args.rtol)
            print(f"{name}: executed in {took:.0f} s; " + (f"{len(diffs)} cells differ" if diffs else "outputs match"))
            for d in diffs:
                print("  " + d)
            if diffs:
                failed.append(name)
        else:
            nbformat.validate(fresh)
            nbformat.write(fresh, path)
            print(f"{name}: executed in {took:.0f} s, wrote {path.relative_to(HERE.parent)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
