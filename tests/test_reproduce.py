"""The reproduction driver end to end on a reduced SynthNeg grid (2 arms, a few steps, 300 test rows).

* determinism: the same command and seed give identical tables (run twice into two folders);
* resume: a driver killed with SIGKILL half way, then rerun, skips the finished runs and gives the
  same tables as the uninterrupted run.
"""

import os
import re
import sys
import signal
import subprocess
import time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
GRID = [
    "--arms",
    "baseline",
    "semclip",
    "--pretrain-steps",
    "6",
    "--steps",
    "4",
    "--max-train",
    "256",
    "--batch-size",
    "64",
    "--eval-max-samples",
    "300",
]


def _cmd(tmp, name):
    return [
        sys.executable,
        "-m",
        "semclip.reproduce",
        *GRID,
        "--runs-dir",
        str(tmp / name / "synthneg"),
        "--figures-dir",
        str(tmp / name / "figures"),
    ]


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}


def _tables(d):
    return {p.name: p.read_text() for p in sorted(Path(d).glob("table*.*")) if p.suffix in (".csv", ".md")}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("repro")
    r = subprocess.run(_cmd(tmp, "a"), env=_env(), capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp


def test_reduced_grid_writes_tables_and_figures(first_run):
    fig = first_run / "a" / "figures"
    t = _tables(fig)
    assert {"table1_retrieval_negation.md", "table1_retrieval_negation.csv", "table3_zeroshot_negated.md"} <= set(t)
    assert (
        "| SemCLIP |" in t["table1_retrieval_negation.md"]
        and "| CLIP (pre-trained stand-in) |" in t["table1_retrieval_negation.md"]
    )
    assert {"umap_shift.png", "gap_distribution.png", "training_curves.png", "provenance.json", "runs.md"} <= {
        p.name for p in fig.iterdir()
    }
    for arm in ("pretrain", "baseline", "semclip"):  # each number traces back to an executed notebook
        assert (first_run / "a" / "synthneg" / arm / "seed42" / "eval" / "06_eval.ipynb").exists()


def test_killed_driver_resumes_and_tables_are_identical(first_run):
    tmp = first_run
    p = subprocess.Popen(
        _cmd(tmp, "b"),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        start_new_session=True,
    )
    marker = tmp / "b" / "synthneg" / "baseline" / "seed42" / "metrics.json"  # the first fine-tuning run finished
    t0 = time.time()
    while not marker.exists() and p.poll() is None and time.time() - t0 < 900:
        time.sleep(0.5)
    assert p.poll() is None, "the driver finished before it could be killed"
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert not (tmp / "b" / "figures" / "table1_retrieval_negation.md").exists()
    r = subprocess.run(_cmd(tmp, "b"), env=_env(), capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for run in ("train/pretrain/seed42", "train/baseline/seed42"):
        assert re.search(re.escape(run) + r"\s+skipped \(finished before\)", r.stdout), r.stdout
    a, b = _tables(tmp / "a" / "figures"), _tables(tmp / "b" / "figures")
    assert a == b, "same command and seed, different tables"
