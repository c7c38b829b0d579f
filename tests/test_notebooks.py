"""The teaching notebooks run top to bottom (the same check as `pytest --nbmake notebooks/`), and the course's
lessons keep the shape the course promises (what you will learn, hidden solutions, a closing cell of asserts)."""

from __future__ import annotations

import json
import time
import warnings

import pytest

from conftest import REPO_ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
BUDGET_S = 60  # each notebook's budget on 2 CPU cores (the standard); exceeding it warns


def _course(nb) -> bool:
    return bool(nb.metadata.get("stepcredit", {}).get("course"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, record_property):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs"), f"{path.name}: commit notebooks without outputs"
    for module in nb.metadata.get("stepcredit", {}).get("requires", []):  # e.g. lesson 4 runs a transformers model
        pytest.importorskip(module, reason=f"{path.name} needs {module} (pip install -e '.[math]')")
    if nb.metadata.get("stepcredit", {}).get("requires_teaching_artefact"):  # lesson 4: the committed teaching copy
        from mathreason.artefact import teaching_dir

        if not (teaching_dir() / "MANIFEST.json").is_file():
            pytest.skip(f"{path.name} needs the arith teaching artefact at {teaching_dir()} (committed as "
                        "notebooks/artefacts/arith-teach; remake: TEACH_DIR=notebooks/artefacts/arith-teach bash scripts/arith_artefact.sh)")
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.perf_counter()
    client.execute()
    wall_s = time.perf_counter() - t0
    record_property("wall_s", round(wall_s, 1))
    print(f"{path.name}: {wall_s:.1f} s")
    if wall_s > BUDGET_S:
        warnings.warn(f"{path.name} took {wall_s:.0f} s, over its {BUDGET_S} s budget (a loaded machine inflates this)")


COURSE = [p for p in NOTEBOOKS if _course(nbformat.read(p, as_version=4))]


def test_the_course_has_its_lessons():
    names = {p.name for p in COURSE}
    assert {"00_paper_on_one_page.ipynb", "01_values_of_steps.ipynb", "02_pits_to_pairs.ipynb", "03_theorem.ipynb",
            "04_math_pipeline.ipynb", "05_scaling_and_data_efficiency.ipynb", "06_stargraph_shortcut.ipynb",
            "07_stargraph_credit.ipynb", "08_open_problems.ipynb"} <= names
    assert not (REPO_ROOT / "notebooks" / "02_stargraph.ipynb").exists()  # replaced by lessons 6 and 7


@pytest.mark.parametrize("path", COURSE, ids=[p.name for p in COURSE])
def test_lesson_shape(path):
    raw = json.loads(path.read_text())
    assert all(c.get("id") for c in raw["cells"]), f"{path.name}: every cell needs an id (nbformat 4.5; nbformat.validate warns without)"
    nb = nbformat.read(path, as_version=4)
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "What you will learn" in md, f"{path.name}: say what the student will learn"
    solutions = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert len(solutions) >= 2, f"{path.name}: two or three exercises with hidden solutions"
    assert all(c.cell_type == "code" and c.metadata.get("jupyter", {}).get("source_hidden") for c in solutions)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "assert" in code[-1].source, f"{path.name}: the last cell asserts what the lesson claims"
    for c in code:
        if "plt.subplots" in c.source or "plt.figure" in c.source:
            assert "set_ylabel" in c.source or "ylabel(" in c.source, f"{path.name}: label every figure's axes"


def test_committed_teaching_copy_matches_its_manifest():
    """Lesson 4's teaching copy is the one checkpoint in git: every file listed with its sha256, none over 1 MB."""
    from mathreason.artefact import COMMITTED_TEACH_DIR, verify_teaching_dir

    man = verify_teaching_dir(COMMITTED_TEACH_DIR)
    assert man["questions"] == 200 and man["model"]["stored_dtype"] == "bfloat16"
    assert max(f["bytes"] for f in man["files"].values()) <= 1_000_000
    assert man["total_bytes"] < 4_000_000
