"""ShardBatches throughput and resume cost, measured side by side in one run.

  - samples/s of one epoch of `ShardBatches` with 0, 1 and 2 DataLoader workers (streams=2 for all, so they
    read identical batches) against the same rows decoded from in-memory PIL images (transform + stack +
    tokenise per batch: the work a loader cannot avoid);
  - resuming at 90% of an epoch (skipped samples read from the tar, never decoded) against decoding
    those 90% of batches.
Images: SynthNeg (32 px PNG) through open_clip's 224 px eval transform, tokenizer ViT-B-32's.
Writes bench/results/wds_stream.json.   Usage: python bench/wds_stream.py [n_rows] [batch_size] [repeats]
"""

import itertools
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
import open_clip  # noqa: E402
from PIL import Image  # noqa: E402
from semclip.data import get_dataset  # noqa: E402
from semclip.wds import ShardBatches, write_shards  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
B = int(sys.argv[2]) if len(sys.argv) > 2 else 50
REPEATS = int(sys.argv[3]) if len(sys.argv) > 3 else 2


def timed(f):
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


def main():
    tmp = Path(tempfile.mkdtemp(prefix="wds_stream_"))
    try:
        ds = get_dataset(
            "synthneg",
            root=tmp / "synthneg",
            split="train",
            n_pretrain=0,
            n_train=N,
            n_val=10,
            n_test=10,
            progress=False,
        )
        write_shards(ds, tmp / "shards", maxcount=max(1, N // 8), progress=False)
        tf = open_clip.image_transform(224, is_train=False)
        tok = open_clip.get_tokenizer("ViT-B-32")
        fields = ("caption", "paraphrase", "negation")
        mk = lambda w: ShardBatches(
            tmp / "shards", tok, tf, batch_size=B, fields=fields, seed=0, shuffle=200, num_workers=w, streams=2
        )
        bpe = mk(0).batches_per_epoch
        res = dict(
            n_rows=N,
            batch_size=B,
            batches_per_epoch=bpe,
            samples_per_epoch=bpe * B,
            repeats=REPEATS,
            cpu_count=os.cpu_count(),
            loadavg_before=os.getloadavg(),
            python=platform.python_version(),
            torch=torch.__version__,
            image="synthneg 32px png -> open_clip eval transform 224px",
        )

        pil = [Image.open(p).convert("RGB") for p in ds.df["image"]]
        texts = {f: ds.df[c].astype(str).tolist() for f, c in zip(fields, ("caption", "paraphrased", "negation"))}

        def in_memory():
            for i in range(bpe):
                sl = slice(i * B, (i + 1) * B)
                torch.stack([tf(im) for im in pil[sl]])
                [tok(texts[f][sl]) for f in fields]

        def epoch(w):
            for _ in itertools.islice(mk(w).iterate(0), bpe):
                pass

        runs = {"in_memory_pil": [], "workers_0": [], "workers_1": [], "workers_2": []}
        for r in range(REPEATS):  # alternating, so load drift hits all alike
            runs["in_memory_pil"].append(timed(in_memory)[0])
            for w in (0, 1, 2):
                runs[f"workers_{w}"].append(timed(lambda: epoch(w))[0])
        res["epoch_s"] = runs
        res["samples_per_s"] = {k: bpe * B / min(v) for k, v in runs.items()}
        res["ratio_to_in_memory"] = {k: res["samples_per_s"][k] / res["samples_per_s"]["in_memory_pil"] for k in runs}

        skip_to = int(0.9 * bpe)
        sb = mk(0)
        t_skip = min(timed(lambda: next(sb.iterate(skip_to)))[0] for _ in range(REPEATS))
        t_dec = min(timed(lambda: [b for b in itertools.islice(sb.iterate(0), skip_to + 1)])[0] for _ in range(REPEATS))
        res["resume"] = dict(
            step=skip_to,
            skipped_samples=skip_to * B,
            first_batch_after_skip_s=t_skip,
            decode_through_same_step_s=t_dec,
            speedup=t_dec / t_skip,
        )

        print(
            f"{N} rows, batch {B}, {bpe} batches per epoch ({bpe * B} samples), load {res['loadavg_before'][0]:.2f} on {os.cpu_count()} cpus"
        )
        print(f"{'':22s}{'samples/s':>12s}{'x in-memory':>14s}")
        for k in runs:
            print(f"{k:22s}{res['samples_per_s'][k]:12.0f}{res['ratio_to_in_memory'][k]:14.2f}")
        print(
            f"resume at step {skip_to}/{bpe}: first batch after {t_skip * 1e3:.0f} ms (skip {skip_to * B} samples) vs "
            f"{t_dec * 1e3:.0f} ms decoding through it: {t_dec / t_skip:.1f}x"
        )
        out = ROOT / "bench" / "results" / "wds_stream.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1) + "\n")
        print("wrote", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
