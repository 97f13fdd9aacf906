"""Run every notebook in nbs/ as its own pytest case, with nbdev's test machinery.

Cells flagged with one of `tst_flags` (pyproject's [tool.nbdev]: notest, slow, cuda) are skipped,
as `nbdev-test` would. `SEMCLIP_TEST_FLAGS="slow cuda"` turns flagged cells on (a GPU run, say).
"""

import os
from pathlib import Path
import pytest
from nbdev.config import get_config
from nbdev.test import test_nb as run_notebook

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted(p for p in (ROOT / "nbs").glob("*.ipynb") if not p.name.startswith("_"))


def _flags():
    skip = get_config(ROOT).tst_flags
    skip = skip.split() if isinstance(skip, str) else list(skip)
    force = os.environ.get("SEMCLIP_TEST_FLAGS", "").split()
    return skip, force


@pytest.mark.parametrize("nb", NBS, ids=[p.stem for p in NBS])
def test_notebook(nb, capfd):
    skip, force = _flags()
    ok, secs = run_notebook(nb, skip_flags=skip, force_flags=force, basepath=ROOT, showerr=True, cell_timeout=900)
    assert ok, f"{nb.name} failed (see the traceback above)"
