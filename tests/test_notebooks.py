"""The notebooks under notebooks/: committed with their outputs, and they still run.

Each notebook is executed top to bottom by nbclient in a fresh ``python3`` kernel,
with ``MAPA_NOTEBOOK_QUICK=1`` (its shortened configuration) and a temporary
working directory, through ``notebooks/execute.py`` (the script that re-executes
them at full configuration and checks the committed outputs).
"""

import importlib.util
import os
import pathlib

import nbformat
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NAMES = ("learned_dynamics", "proximal_operators", "meta_train_your_own")
CELL_TIMEOUT = 300  # seconds per cell


def _load_execute_script():
    spec = importlib.util.spec_from_file_location("notebooks_execute", NOTEBOOK_DIR / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


execute_script = _load_execute_script()


def _committed(name):
    return nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)


def _kinds(cell):
    """What a code cell's outputs are: stdout streams and the MIME types of rich outputs (stderr left out)."""
    kinds = set()
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            if out["name"] == "stdout":
                kinds.add("stream:stdout")
        elif out["output_type"] == "error":
            kinds.add("error")
        else:
            kinds.update(out.get("data", {}))
    return kinds


def _snapshot():
    """Files of notebooks/ (with size and mtime) and the names at the repository root."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(NOTEBOOK_DIR):
        dirnames[:] = [d for d in dirnames if d not in ("__pycache__", ".ipynb_checkpoints")]
        for f in filenames:
            p = pathlib.Path(dirpath, f)
            st = p.stat()
            files[str(p.relative_to(ROOT))] = (st.st_size, st.st_mtime_ns)
    return files, {p.name for p in ROOT.iterdir()}


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_valid_nbformat4_with_outputs(name):
    nb = _committed(name)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    markdown = [c for c in nb.cells if c.cell_type == "markdown"]
    assert len(code) >= 4 and len(markdown) >= 4
    assert all(c.execution_count is not None for c in code), "executed top to bottom, every code cell"
    counts = [c.execution_count for c in code]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)
    kinds = set().union(*(_kinds(c) for c in code))
    assert "image/png" in kinds and "stream:stdout" in kinds
    assert "error" not in kinds
    for c in code:
        assert not any(o["output_type"] == "stream" and o["name"] == "stderr" for o in c.outputs), c.id
    # The shortened configuration is selected by the environment variable, in the first code cell.
    assert 'os.environ.get("MAPA_NOTEBOOK_QUICK") == "1"' in code[0].source


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Each notebook executed once (quick), each in its own temporary working directory."""
    runs = {}

    def run(name):
        if name not in runs:
            cwd = tmp_path_factory.mktemp(name)
            before = _snapshot()
            nb = execute_script.execute(_committed(name), quick=True, timeout=CELL_TIMEOUT, cwd=str(cwd))
            runs[name] = (nb, cwd, before, _snapshot())
        return runs[name]

    return run


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_and_produces_outputs_of_the_committed_kinds(name, executed):
    # execute() raises nbclient's CellExecutionError on the first cell that fails.
    nb, cwd, before, after = executed(name)
    committed = _committed(name)
    assert [c.get("id") for c in nb.cells] == [c.get("id") for c in committed.cells]
    for fresh, old in zip(nb.cells, committed.cells):
        if old.cell_type != "code":
            continue
        assert "error" not in _kinds(fresh), fresh.id
        if old.outputs:
            assert _kinds(fresh) == _kinds(old), (name, old.id, _kinds(old), _kinds(fresh))
    # Nothing written into the repository: files go to the kernel's working directory.
    assert before == after, f"{name} wrote into the repository"


def test_meta_train_notebook_writes_under_its_working_directory(executed):
    nb, cwd, _, _ = executed("meta_train_your_own")
    run_dir = cwd / "my_mapa_run"
    assert (run_dir / "checkpoint" / "metrics.jsonl").is_file()
    assert sorted(p.name for p in (run_dir / "exported").iterdir()) == ["my_mapa.json", "my_mapa.msgpack"]


def test_quick_runs_are_quick(executed):
    # The quick configuration is in force: the printed step counts are the shortened ones.
    text = execute_script.output_text
    nb = executed("learned_dynamics")[0]
    assert "(20, 4)" in "".join(text(c) for c in nb.cells if c.cell_type == "code")
    nb = executed("meta_train_your_own")[0]
    assert "2 meta-steps in" in "".join(text(c) for c in nb.cells if c.cell_type == "code")


def test_check_compares_numbers_within_tolerance():
    def notebook(*texts):
        nb = nbformat.v4.new_notebook()
        for t in texts:
            cell = nbformat.v4.new_code_cell("")
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=t)]
            nb.cells.append(cell)
        return nb

    numbers = execute_script.numbers
    assert numbers("loss 0.1234, acc 1e-3 at step 20 in 9.5 s <x at 0x7f3a>") == [0.1234, 1e-3, 20.0]
    assert numbers("mlp_relu_1x32 (200, 4) -0.5") == [200.0, 4.0, -0.5]
    a = notebook("loss 1.0000 (compile 3.1 s)", "acc 0.5")
    assert execute_script.compare(a, notebook("loss 1.0004 (compile 7.9 s)", "acc 0.5")) == []
    diffs = execute_script.compare(a, notebook("loss 1.0100", "acc 0.5 and 0.7"))
    assert len(diffs) == 2 and "1 of 1 numbers differ" in diffs[0] and "1 numbers committed, 2 now" in diffs[1]


def test_paper_operator_is_discontinuous_and_flips_sign_where_the_notebooks_say():
    mj = pytest.importorskip("mapa_jax")
    tau, eps = 1.0, 1e-4
    for lam in (0.5, 2.0):
        below = float(mj.prox.smoothed_shrinkage(np.float32(tau - eps), tau, lam))
        above = float(mj.prox.smoothed_shrinkage(np.float32(tau + eps), tau, lam))
        assert below - above == pytest.approx(lam * tau, abs=1e-3)
        h_below = float(mj.prox.huber_shrinkage(np.float32(tau - eps), tau, lam))
        h_above = float(mj.prox.huber_shrinkage(np.float32(tau + eps), tau, lam))
        assert abs(h_above - h_below) < 1e-3
    assert float(mj.prox.smoothed_shrinkage(np.float32(1.5 * tau), tau, 2.0)) < 0
