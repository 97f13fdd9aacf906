"""Training throughput of 1 vs 2 CPU processes (torchrun, gloo) on the tiny model, side by side in one run.

    python bench/dist_throughput.py [--steps 30] [--rounds 2] [--arm pretrain]

Each configuration runs `semclip-train` for `--steps` steps on SynthNeg with the same global batch
(256); the 2-process run gives each process half the batch and one thread (the machine's cores are
split between the processes: 2 cores -> 1 thread each), the 1-process run uses every core. samples/s
are read from each run's log.jsonl (the median over steps, the first 5 dropped as warm-up), the
configurations are interleaved over `--rounds`, and medians are reported. With 2 cores little gain is
expected: the same cores do the same arithmetic, plus an all-gather of features and an all-reduce of
gradients per step. Writes bench/results/dist_throughput.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=30)
ap.add_argument("--rounds", type=int, default=2)
ap.add_argument(
    "--arm", default="pretrain", help="pretrain trains the vision tower too; semclip fine-tunes the text tower"
)
a = ap.parse_args()
cores = os.cpu_count() or 2


def run(nproc: int, out: Path) -> float:
    "samples/s of one `semclip-train` run with `nproc` processes (median over logged steps after warm-up)."
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": str(max(1, cores // nproc)),
        "SEMCLIP_RUNS": str(out / "runs"),
    }
    args = [
        "--dataset",
        "synthneg",
        "--arm",
        a.arm,
        "--steps",
        str(a.steps),
        "--batch_size",
        "256",
        "--eval_every",
        "0",
        "--ckpt_every",
        "0",
        "--progress",
        "False",
        "--out_dir",
        str(out),
        "--warmup_steps",
        "5",
    ]
    if a.arm != "pretrain":
        args += ["--init_checkpoint", "None"]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "semclip.train",
        *args,
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        sys.exit(f"{nproc}-process run failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    recs = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines() if l.strip()]
    sps = [r["samples_per_s"] for r in recs if "samples_per_s" in r][5:]
    return statistics.median(sps)


res = {1: [], 2: []}
with tempfile.TemporaryDirectory() as tmp:
    for r in range(a.rounds):
        for n in (1, 2):
            res[n].append(run(n, Path(tmp) / f"r{r}n{n}"))
        print(
            f"round {r + 1}: 1 process {res[1][-1]:.1f} samples/s, 2 processes {res[2][-1]:.1f} samples/s", flush=True
        )

med = {n: statistics.median(v) for n, v in res.items()}
out = dict(
    arm=a.arm,
    batch=256,
    steps=a.steps,
    rounds=a.rounds,
    cores=cores,
    samples_per_s={"1_process": round(med[1], 1), "2_processes": round(med[2], 1)},
    two_over_one=round(med[2] / med[1], 3),
    per_round={str(k): [round(x, 1) for x in v] for k, v in res.items()},
)
print(json.dumps(out, indent=2))
path = ROOT / "bench" / "results" / "dist_throughput.json"
path.write_text(json.dumps(out, indent=2) + "\n")
print(f"written {path}")
