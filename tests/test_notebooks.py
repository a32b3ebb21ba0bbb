"""Every notebook in notebooks/ runs top to bottom and writes the non-trivial figures it names.

The notebooks read ``BAYESLMM_NB_DRAWS`` (posterior draws and tuning steps per chain) so that
the test runs them with small draws, and scale their bootstrap and simulated data sets with it;
a reader running them gets the full default. A notebook runs in a temporary folder, its working
directory, and leaves nothing in the source tree: ``git status`` of notebooks/ is the same after
the run as before it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

#: each notebook samples and renders figures (5-50 s apiece): the slow tier, which CI runs
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PNG = re.compile(r"""["']([\w\-.]+\.png)["']""")


def _git_status(folder: Path) -> set[str] | None:
    """``git status --porcelain --untracked-files=all`` of a folder, one entry a line; None without git."""
    try:
        r = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all", "--", str(folder)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return set(r.stdout.splitlines()) if r.returncode == 0 else None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_writes_figures(path: Path, tmp_path: Path, monkeypatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("BAYESLMM_NB_DRAWS", "200")
    before = _git_status(path.parent)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    after = _git_status(path.parent)
    if before is not None and after is not None:
        assert after <= before, f"{path.name} left files in {path.parent}: {sorted(after - before)}"
    named = {m for c in nb.cells if c.cell_type == "code" for m in PNG.findall(c.source)}
    assert named, f"{path.name} saves no figure"
    written = {p.name for p in tmp_path.glob("*.png")}
    assert named <= written, f"figures named but not written: {sorted(named - written)}"
    import matplotlib.pyplot as plt

    for name in named:
        img = plt.imread(tmp_path / name)[..., :3]
        inked = (img.min(axis=2) < 0.8).mean()  # share of pixels drawn (not white or near white)
        assert min(img.shape[:2]) > 200 and 0.005 < inked < 0.6, f"{name} looks empty ({inked:.3%} drawn)"
    first = next(c for c in nb.cells if c.cell_type == "markdown").source.lower()
    last = [c for c in nb.cells if c.cell_type == "markdown"][-1].source.lower()
    assert "question" in first and "answer" in last, "a notebook states its question first and its answer last"
