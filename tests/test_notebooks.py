"""The notebooks under notebooks/ are valid nbformat 4 and their code runs top to bottom.

Each notebook's code cells are concatenated (IPython magics and shell escapes
skipped), its ``STEPS = 200`` is shrunk so that the run stays short, and the
code is executed in a fresh namespace with matplotlib's Agg backend.
"""

import json
import pathlib
import re

import matplotlib

matplotlib.use("Agg", force=True)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
LEARNED_DYNAMICS = ROOT / "notebooks" / "learned_dynamics.ipynb"
TEST_STEPS = 20


def _load(path: pathlib.Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _source(cell: dict) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def _code(nb: dict) -> str:
    """The notebook's code cells, in order, without IPython magics or shell escapes."""
    cells = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        lines = [l for l in _source(cell).splitlines() if not l.lstrip().startswith(("%", "!"))]
        cells.append("\n".join(lines))
    return "\n\n".join(cells) + "\n"


def test_learned_dynamics_is_valid_nbformat4_with_empty_outputs():
    nb = _load(LEARNED_DYNAMICS)
    assert nb["nbformat"] == 4 and isinstance(nb["nbformat_minor"], int)
    assert isinstance(nb["metadata"], dict)
    kinds = [c["cell_type"] for c in nb["cells"]]
    assert set(kinds) <= {"code", "markdown", "raw"}
    assert kinds.count("code") >= 5 and kinds.count("markdown") >= 5
    ids = [c.get("id") for c in nb["cells"]]
    assert all(isinstance(i, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    for cell in nb["cells"]:
        assert isinstance(cell["metadata"], dict)
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    first_code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    assert re.search(r"^STEPS = 200\b", _source(first_code), flags=re.M)


@pytest.fixture(scope="module")
def learned_dynamics():
    code = _code(_load(LEARNED_DYNAMICS))
    code, n = re.subn(r"^STEPS = 200\b", f"STEPS = {TEST_STEPS}", code, flags=re.M)
    assert n == 1, "the notebook must set STEPS = 200 exactly once"
    plt.close("all")
    namespace = {"__name__": "__notebook__"}
    exec(compile(code, str(LEARNED_DYNAMICS), "exec"), namespace)
    namespace["_figure_numbers"] = plt.get_fignums()
    yield namespace
    plt.close("all")


def test_learned_dynamics_records_proximal_parameters(learned_dynamics):
    ns = learned_dynamics
    jax = ns["jax"]
    assert ns["STEPS"] == TEST_STEPS
    assert list(ns["results"]) == list(ns["TASK_NAMES"]) and len(ns["TASK_NAMES"]) >= 2
    for name, r in ns["results"].items():
        n_tensors = len(jax.tree.leaves(r["params"]))
        assert len(r["labels"]) == n_tensors and len(set(r["labels"])) == n_tensors, name
        for key in ("eta", "lam", "tau"):
            values = r["mapa"][key]
            assert values.shape == (TEST_STEPS, n_tensors), (name, key, values.shape)
            assert np.all(np.isfinite(values)) and np.all(values > 0), (name, key)
        # eta is bounded by the config's eta_max, tau by tau_max.
        assert np.all(r["mapa"]["eta"] <= ns["config"].eta_max * (1 + 1e-5)), name
        assert np.all(r["mapa"]["tau"] <= ns["config"].tau_max * (1 + 1e-5)), name
        for opt in ("mapa", "prox_adam"):
            rec = r[opt]
            assert rec["loss"].shape == (TEST_STEPS,) and np.all(np.isfinite(rec["loss"])), (name, opt)
            for key in ("zero_frac", "small_frac"):
                assert rec[key].shape == (TEST_STEPS,), (name, opt, key)
                assert np.all((rec[key] >= 0) & (rec[key] <= 1)), (name, opt, key)
            assert np.all(rec["small_frac"] >= rec["zero_frac"]), (name, opt)
        # The last recorded values are the state's.
        last = [float(np.reshape(v, ())) for v in jax.tree.leaves(ns["mj"].proximal_parameters(r["state"])["eta"])]
        np.testing.assert_allclose(r["mapa"]["eta"][-1], last, rtol=1e-6)


def test_learned_dynamics_draws_its_figures(learned_dynamics):
    ns = learned_dynamics
    Figure = matplotlib.figure.Figure
    figures = [ns["fig_loss"], ns["fig_sparsity"], ns["fig_ops"], *ns["prox_figs"].values()]
    assert all(isinstance(f, Figure) for f in figures)
    assert len(ns["_figure_numbers"]) >= len(figures)
    # One line per tensor on each of the eta / lambda / tau panels.
    for name, fig in ns["prox_figs"].items():
        n_tensors = len(ns["results"][name]["labels"])
        assert len(fig.axes) == 3
        for ax in fig.axes:
            assert len(ax.get_lines()) == n_tensors, (name, ax.get_title())
    # Both optimizers on each loss panel (raw and smoothed curves).
    assert len(ns["fig_loss"].axes) == len(ns["results"])
    for ax in ns["fig_loss"].axes:
        assert len(ax.get_lines()) == 4
    # The operator panels: lam = 0.5 and lam = 2.
    assert [ax.get_title() for ax in ns["fig_ops"].axes] == ["tau = 1, lam = 0.5", "tau = 1, lam = 2"]


def test_paper_operator_is_discontinuous_and_flips_sign_where_the_notebook_says():
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
