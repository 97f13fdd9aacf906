"""Shared pytest setup: offline hub, a private data/runs root per session, repo paths."""

import os
import sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ["HF_HUB_OFFLINE"] = "1"  # fetching pretrained weights fails in 0.1 s, not 47 s
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# every test session writes its runs (checkpoints, logs, executed notebooks) into a fresh folder
import tempfile

os.environ["SEMCLIP_RUNS"] = tempfile.mkdtemp(prefix="semclip-test-runs-")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
