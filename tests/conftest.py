"""Shared pytest setup: offline hub, a private data/runs root per session, repo paths, and a bounded disk footprint.

A test run writes checkpoints (about 100 MB each with their optimizer state), executed notebooks and SynthNeg
copies. Left until the end of the session they add up to several GB, enough to fill a small CI disk. So the
temporary folders of a test file are removed as soon as its last test has run, and the session's runs folder at
the end, unless something failed: what a failure left behind is kept for a look.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ["HF_HUB_OFFLINE"] = "1"  # fetching pretrained weights fails in 0.1 s, not 47 s
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# every test session writes its runs (checkpoints, logs, executed notebooks) into a fresh folder
RUNS = Path(tempfile.mkdtemp(prefix="semclip-test-runs-"))
os.environ["SEMCLIP_RUNS"] = str(RUNS)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_FAILED_FILES: set = set()  # test files with a failed or erroring test: their folders are kept


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        _FAILED_FILES.add(item.nodeid.split("::")[0])
    return report


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == 0 and not _FAILED_FILES:
        shutil.rmtree(RUNS, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def _free_the_files_folders(request, tmp_path_factory):
    "Remove the temporary folders a test file made (its module fixtures' and its tests') once its last test has run."
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    yield
    if request.node.nodeid.split("::")[0] in _FAILED_FILES:
        return
    for path in set(base.iterdir()) - before:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
