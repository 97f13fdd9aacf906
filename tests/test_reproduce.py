"""The reproduction driver end to end on a reduced SynthNeg grid (2 arms, a few steps, 300 test rows).

* determinism: the same command and seed give identical tables (run twice into two folders);
* resume: a driver killed with SIGKILL half way, then rerun, skips the finished runs and gives the
  same tables as the uninterrupted run.
"""

import os
import json
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
    prov = json.loads((fig / "provenance.json").read_text())  # the machine's speed beside the wall time
    assert all(prov["matmul_gflops"][k] > 0 for k in ("before", "after")), prov
    assert "GFLOP/s before the runs" in (fig / "runs.md").read_text().split("\n", 1)[0]
    runs = first_run / "a" / "synthneg"  # each number traces back to an executed notebook:
    assert (runs / "pretrain" / "seed42" / "eval" / "06_eval.ipynb").exists()  # the stand-in's evaluation run
    for arm in ("baseline", "semclip"):  # a fine-tuned checkpoint is evaluated in the kernel that trained it
        executed = (runs / arm / "seed42" / "05_train.ipynb").read_text()
        assert '"evaluate": true' in executed and (runs / arm / "seed42" / "eval" / "metrics.json").exists()
        assert not (runs / arm / "seed42" / "eval" / "06_eval.ipynb").exists()


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
    marker = (
        tmp / "b" / "synthneg" / "baseline" / "seed42" / "eval" / "metrics.json"
    )  # the first fine-tuned run evaluated
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


def test_evaluation_in_the_training_kernel_equals_semclip_eval(first_run):
    "The grid evaluates a fine-tuned checkpoint where it was trained; semclip-eval on the same file gives the same metrics."
    run = first_run / "a" / "synthneg" / "semclip" / "seed42"
    out = first_run / "separate-eval"
    main = "import sys; from semclip.cli import eval_main; eval_main(sys.argv[1:])"
    cmd = [sys.executable, "-c", main, "--checkpoint", str(run / "final.pt"), "--max-samples", "300"]
    prov = json.loads((first_run / "a" / "figures" / "provenance.json").read_text())
    threads = prov["threads_per_run"]["train/semclip/seed42"]  # float sums depend on the thread count: the same one
    env = {**_env(), **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    r = subprocess.run([*cmd, "--out-dir", str(out)], env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    folded = json.loads((run / "eval" / "metrics.json").read_text())
    separate = json.loads((out / "metrics.json").read_text())
    assert folded == separate and folded["n_samples"] == 300
