"""torchrun with 2 CPU processes (gloo) against 1 process on the same global batch.

The loss is averaged over ranks for logging (each rank's local loss is taken against the gathered
batch), and gradients are averaged across ranks after the backward pass; the result must equal
the single-process step. Tolerances: 1e-5 relative on the loss, 1e-4 absolute on gradients (fp32
sums in a different order).
"""

import os
import sys
import json
import subprocess
from pathlib import Path
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
HELPER = ROOT / "tests" / "helpers" / "dist_step.py"


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def _torchrun(*args, nproc=2, timeout=300):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *map(str, args)]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.mark.parametrize("arm,accum", [("pretrain", 1), ("semclip", 1), ("semclip", 2), ("negclip", 1)])
def test_one_step_equals_single_process(tmp_path, arm, accum):
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    r = subprocess.run(
        [sys.executable, str(HELPER), str(one), arm, str(accum)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    _torchrun(HELPER, two, arm, accum)
    a, b = torch.load(one, weights_only=True), torch.load(two, weights_only=True)
    for k in a["terms"]:
        assert b["terms"][k] == pytest.approx(a["terms"][k], rel=1e-5, abs=1e-6), k
    assert a["grads"].keys() == b["grads"].keys() and len(a["grads"]) > 10
    worst = max((a["grads"][n] - b["grads"][n]).abs().max().item() for n in a["grads"])
    print(
        f"{arm} accum={accum}: loss {a['terms']['loss']:.6f} vs {b['terms']['loss']:.6f}, max |grad diff| {worst:.2e}"
    )
    assert worst < 1e-4


def test_short_run_matches_single_process(tmp_path):
    common = [
        "--arm",
        "pretrain",
        "--steps",
        "6",
        "--max_train",
        "512",
        "--batch_size",
        "64",
        "--eval_every",
        "0",
        "--init_checkpoint",
        "none",
        "--progress",
        "false",
        "--seed",
        "3",
    ]
    r = subprocess.run(
        [sys.executable, "-m", "semclip.train", *common, "--out_dir", str(tmp_path / "one")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    _torchrun("-m", "semclip.train", *common, "--out_dir", tmp_path / "two", timeout=600)
    m1, m2 = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert m2["world_size"] == 2
    assert m2["neg_acc"] == pytest.approx(m1["neg_acc"], abs=0.01)
    assert m2["t2i_top1"] == pytest.approx(m1["t2i_top1"], abs=0.01)
    w1 = torch.load(tmp_path / "one" / "final.pt", weights_only=True)["state_dict"]
    w2 = torch.load(tmp_path / "two" / "final.pt", weights_only=True)["state_dict"]
    worst = max((w1[k].float() - w2[k].float()).abs().max().item() for k in w1)
    print(f"after 6 steps: max |weight diff| {worst:.2e}; neg_acc {m1['neg_acc']:.3f} vs {m2['neg_acc']:.3f}")
    assert worst < 1e-3
