"""Every notebook in notebooks/ runs top to bottom and writes non-trivial figures."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_writes_figures(path: Path, tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    figures = list(tmp_path.glob("*.png"))
    expected = sum(src.count(".savefig(") for src in (c.source for c in nb.cells if c.cell_type == "code"))
    assert len(figures) == expected
    for fig in figures:
        assert fig.stat().st_size > 5_000, f"{fig.name} looks empty"
