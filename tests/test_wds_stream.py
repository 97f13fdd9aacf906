"""ShardBatches across processes: DataLoader workers (fork and spawn) read the batches num_workers=0 reads,
and a run killed mid-epoch resumes in a fresh process with exactly the batches an uninterrupted run reads."""

import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path
import pytest
import torch

from semclip.core import ConfigError
from semclip.data import get_dataset
from semclip.wds import ShardBatches, write_shards

KW = dict(batch_size=8, seed=7, shuffle=20, streams=2, with_keys=True)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wds-stream")
    ds = get_dataset(
        "synthneg", root=tmp / "synthneg", split="train", n_pretrain=0, n_train=100, n_val=10, n_test=10, progress=False
    )
    write_shards(ds, tmp / "shards", maxcount=16, progress=False)  # 7 shards: 6 x 16 + 4
    return tmp / "shards"


def _take(sb, start, n):
    return list(itertools.islice(sb.iterate(start), n))


def _same(a, b):
    assert [x["key"] for x in a] == [x["key"] for x in b]
    for x, y in zip(a, b):
        assert torch.equal(x["image"], y["image"])
        for f in ("caption", "paraphrase", "negation"):
            assert torch.equal(x[f], y[f])


@pytest.mark.parametrize("ctx", ["fork", "spawn"])
def test_workers_match_in_process(shards, ctx):
    import open_clip

    tok = open_clip.get_tokenizer("ViT-B-32")  # module-level objects only: they must pickle for spawn
    ref = _take(ShardBatches(shards, tok, num_workers=0, **KW), 0, 18)  # 8 batches per epoch: crosses two epochs
    assert len({k for b in ref[:8] for k in b["key"]}) == 64
    if ctx == "fork":
        _same(_take(ShardBatches(shards, tok, num_workers=2, multiprocessing_context=ctx, **KW), 0, 18), ref)
    _same(_take(ShardBatches(shards, tok, num_workers=2, multiprocessing_context=ctx, **KW), 5, 13), ref[5:])


RUN = textwrap.dedent("""
    import itertools, json, os, sys
    from semclip.wds import ShardBatches
    shards, start, stop, state_in, out, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
    sb = ShardBatches(shards, None, num_workers=workers, batch_size=8, seed=7, shuffle=20, streams=2, with_keys=True)
    if state_in != '-': sb.check_resume(json.loads(open(state_in).read()))
    with open(out, 'a') as f:
        for step, b in zip(range(start, 10**9), sb.iterate(start)):
            if step == stop:
                f.flush(); os._exit(137)                      # killed: no clean-up, workers and all
            f.write(json.dumps(dict(step=step, key=b['key'], state=sb.state(step + 1))) + '\\n'); f.flush()
""")


def _run(tmp, shards, start, stop, state_in, out, workers):
    r = subprocess.run(
        [sys.executable, "-c", RUN, str(shards), str(start), str(stop), state_in, str(out), str(workers)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return r


def test_kill_and_resume(shards, tmp_path):
    whole = tmp_path / "whole.jsonl"
    assert _run(tmp_path, shards, 0, 20, "-", whole, 0).returncode == 137
    ref = [json.loads(l)["key"] for l in whole.read_text().splitlines()]
    killed = tmp_path / "killed.jsonl"
    assert _run(tmp_path, shards, 0, 11, "-", killed, 2).returncode == 137  # dies mid-epoch 1, with workers
    last = json.loads(killed.read_text().splitlines()[-1])
    (tmp_path / "state.json").write_text(json.dumps(last["state"]))
    assert last["state"]["step"] == 11 and last["state"]["epoch"] == 1
    r = _run(tmp_path, shards, 11, 20, str(tmp_path / "state.json"), killed, 0)  # resumes in process
    assert r.returncode == 137, r.stderr
    lines = [json.loads(l) for l in killed.read_text().splitlines()]
    assert [l["step"] for l in lines] == list(range(20))
    assert [l["key"] for l in lines] == ref


def test_resume_refuses_other_settings(shards, tmp_path):
    st = json.loads(json.dumps(ShardBatches(shards, None, **KW).state(11)))
    ShardBatches(shards, None, num_workers=1, **KW).check_resume(st)  # workers may change, streams pinned
    with pytest.raises(ConfigError, match="streams: 2 in the checkpoint, 1 now"):
        ShardBatches(shards, None, **dict(KW, streams=None)).check_resume(st)
    with pytest.raises(ConfigError, match="seed: 7 in the checkpoint, 8 now"):
        ShardBatches(shards, None, **dict(KW, seed=8)).check_resume(st)
    (tmp_path / "bad.json").write_text(json.dumps(dict(st, batch_size=4)))
    r = _run(tmp_path, shards, 11, 12, str(tmp_path / "bad.json"), tmp_path / "y.jsonl", 0)
    assert r.returncode == 1 and "batch_size: 4 in the checkpoint, 8 now" in r.stderr
