"""The README's Python examples run as written, and its test command is what CI runs."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_python_example_runs_and_its_optimizers_take_a_finite_step(index, capsys):
    """Each block runs as written; what it prints is finite numbers, and every optimizer it
    builds takes a finite step on the block's own params (or a small tree)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    ns = {"__name__": "__readme__"}
    exec(compile(_python_blocks()[index], f"README.md[python block {index}]", "exec"), ns)
    out = capsys.readouterr().out
    printed = [float(x) for x in re.findall(r"[-+]?\d+\.\d+(?:e[-+]?\d+)?|nan|inf", out)]
    assert all(np.isfinite(printed)), out
    txs = {k: v for k, v in ns.items() if isinstance(v, optax.GradientTransformation)}
    assert printed or txs, "the block neither prints a result nor builds an optimizer"
    params = ns.get("params", {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)})
    for name, tx in txs.items():
        grads = jax.tree.map(jnp.ones_like, params)
        updates, _ = tx.update(grads, tx.init(params), params)
        leaves = jax.tree.leaves(updates)
        assert leaves and all(bool(jnp.all(jnp.isfinite(u))) for u in leaves), name
        assert any(bool(jnp.any(u != 0)) for u in leaves), name  # it moved


def test_readme_usage_example_produces_exact_zeros(capsys):
    exec(compile(_python_blocks()[0], "README.md", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    zeros = int(re.search(r"exact zeros in w: (\d+) of 20", out).group(1))
    assert zeros >= 10, out


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in ci
    block = README.split("<!-- test-command -->", 1)[1]
    command = [l for l in block.splitlines() if l.strip() and not l.startswith("```")][0]
    assert "pytest" in command
