"""The README's Python examples run as written, and its test command is what CI runs."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_python_example_runs(index, capsys):
    code = _python_blocks()[index]
    exec(compile(code, f"README.md[python block {index}]", "exec"), {"__name__": "__readme__"})


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
