"""Training streamed from WebDataset shards (`train_shards`), against the real trainer.

- a SIGKILLed streamed run resumed from its checkpoint ends with weights IDENTICAL (torch.equal) to an
  uninterrupted streamed run (the stream's position is part of the checkpoint; skipped samples are not decoded);
- a streamed run resumed with another batch size is refused, naming the difference;
- torchrun with 2 CPU processes (gloo) trains from shards, each rank reading its own shards;
- bad parameters: max_train with train_shards, shards without a manifest.

The data: 160 SynthNeg images as the SemCLIP CSV (128 train rows written as 8 shards of 16), batch 32.
"""

import json
import signal
import subprocess
import sys
from pathlib import Path
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tests.test_resume_faults import data_dir, runs, _signal_when, _assert_same_weights, _env  # noqa: F401 (fixtures)
from _shared import quick_run_params, train_cli_args

STEPS, CKPT_EVERY, BATCH = 6, 2, 32


@pytest.fixture(scope="module")
def shards(data_dir, tmp_path_factory):
    "The training split of `data_dir` as 8 WebDataset shards of 16 samples (with manifest.json)."
    from semclip.data import get_dataset
    from semclip.wds import write_shards

    out = tmp_path_factory.mktemp("shards")
    ds = get_dataset("semclip_csv", root=data_dir, split="train")
    write_shards(ds, out, maxcount=16, progress=False)
    return out


def _params(data_dir, shards, out_dir, arm="pretrain", **kw):
    settings = dict(train_shards=str(shards), batch_size=BATCH, steps=STEPS, ckpt_every=CKPT_EVERY, warmup_steps=4)
    return quick_run_params(data_dir, out_dir, arm, **{**settings, **kw})


def test_streamed_run_resumes_exactly(data_dir, shards, runs):
    from semclip.train import train

    ref = runs / "stream_ref"
    m = train(**_params(data_dir, shards, ref))
    assert m["step"] == STEPS and 0 <= m["neg_acc"] <= 1
    log = [json.loads(l) for l in (ref / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "split" not in r] == list(range(1, STEPS + 1))

    p = _params(data_dir, shards, runs / "stream_killed")
    rc, console, seen = _signal_when(p, runs, min_step=2 * CKPT_EVERY + 1, sig=signal.SIGKILL)
    assert rc == -signal.SIGKILL, console[-2000:]
    assert seen < STEPS, f"the run finished (step {seen}) before the kill: nothing was resumed"
    st = torch.load(Path(p["out_dir"]) / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert st["step"] == 2 * CKPT_EVERY and st["extra"]["data_state"]["step"] == 2 * CKPT_EVERY
    train(**(p | dict(resume=True)))
    _assert_same_weights(ref / "final.pt", Path(p["out_dir"]) / "final.pt")


def test_resume_with_other_batch_size_is_refused(data_dir, shards, runs):
    from semclip.train import train
    from semclip.core import ConfigError

    out = runs / "stream_refuse"
    train(**_params(data_dir, shards, out, steps=2, ckpt_every=1))
    with pytest.raises(ConfigError, match="batch_size: 32 in the checkpoint, 16 now"):
        train(**_params(data_dir, shards, out, steps=4, ckpt_every=1, batch_size=16, resume=True))


def test_two_processes_stream_their_own_shards(data_dir, shards, runs):
    p = _params(data_dir, shards, runs / "stream_ddp", steps=4, ckpt_every=0)
    env = dict(_env(runs), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "semclip.train",
        *train_cli_args(p),
    ]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = json.loads((runs / "stream_ddp" / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["step"] == 4
    assert "streaming training rows from 8 shards" in r.stdout + r.stderr
    st = torch.load(runs / "stream_ddp" / "final.pt", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in st["state_dict"].values() if v.is_floating_point())


def test_bad_stream_parameters(data_dir, shards, tmp_path):
    from semclip.train import train
    from semclip.core import ConfigError

    with pytest.raises(ConfigError, match="max_train applies to the in-memory split"):
        train(**_params(data_dir, shards, tmp_path / "a", max_train=64))
    bare = tmp_path / "bare"
    bare.mkdir()  # shards without their manifest.json
    for f in sorted(shards.glob("*.tar"))[:2]:
        (bare / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ConfigError, match="manifest.json"):
        train(**_params(data_dir, str(bare / "shard-{000000..000001}.tar"), tmp_path / "b"))
