"""Training-step throughput on the tiny model, measured side by side in one run.

    python bench/train_step.py [--batch 256] [--steps 6] [--rounds 3]

Prints and writes bench/results/train_step.json:
  * samples/s of our baseline and semclip arms (vision tower frozen, as in the paper) and their ratio;
  * the semclip step's overhead beyond its two extra text encodings: a text-tower forward+backward of
    the same batch's captions, paraphrases and negations is timed in the same run; target: semclip <=
    baseline + (paraphrase + negation encodings) within 10% (paraphrases are longer than captions, so
    the older yardstick baseline + 2 x caption encoding is printed too);
  * model FLOP utilisation: the FLOPs of open_clip's own step on this model (counted once with
    torch.utils.flop_counter) x samples/s / the fp32 matmul peak measured in this run, for every method
    (the anchors in the brief: open_clip's trainer 32%, a plain in-memory loop 43%);
  * our steps against open_clip's own training step (`open_clip_train.train.train_one_epoch`) on the
    same model and data: full training (vision tower trained, the pre-training arm) and frozen vision
    tower (the fine-tuning arms), open_clip reading the PNGs through its CsvDataset + DataLoader as
    its trainer does, and also fed from memory. Target: ours no slower.
Methods are interleaved over several rounds (this machine is noisy); medians are reported.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
import torch

from semclip.model import create_model, freeze
from semclip.loss import make_loss
from semclip.train import (
    prepare_split,
    batch_indices,
    _batch,
    optimizer_step,
    make_optimizer,
    WarmupCosine,
    encode_images_once,
    encode_tokens,
)

ap = argparse.ArgumentParser()
ap.add_argument("--batch", type=int, default=256)
ap.add_argument("--steps", type=int, default=6, help="timed steps per round and method")
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--rows", type=int, default=2560)
ap.add_argument("--only", default="", help="comma-separated method names to time (default: all); the summary needs all")
a = ap.parse_args()
B = a.batch
torch.manual_seed(0)

bundle = create_model("semclip-tiny")
data = prepare_split(
    bundle, "synthneg", "pretrain", None, ("caption", "paraphrase", "negation"), a.rows, progress=False
)
print(f"{len(data)} SynthNeg rows, batch {B}, {torch.get_num_threads()} threads")


def ours(arm, frozen):
    "A closure running one optimiser step of our trainer for `arm`."
    b = create_model("semclip-tiny")
    m = b.model
    lf = make_loss(arm, 128)
    freeze(m, vision=frozen)
    m.logit_scale.requires_grad_(bool(lf.uses_model_logit_scale))
    fields = ("caption",) + tuple(f for f in ("paraphrase", "negation") if f in lf.required_inputs)
    opt = make_optimizer(m, lf, 1e-4, 0.2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(10, 1000))
    trainable = [q for g in opt.param_groups for q in g["params"]]
    d = data
    if frozen:
        d = types.SimpleNamespace(
            tokens=data.tokens, images=None, image_features=encode_images_once(m, data.images, progress=False)
        )
    m.train()
    step = [0]

    def run():
        idx = batch_indices(len(data), B, step[0], 0)
        step[0] += 1
        optimizer_step(m, lf, _batch(d, idx, fields, "cpu"), fields, opt, sched, trainable)

    return run


def text_fwd_bwd(field):
    "Forward+backward of the text tower alone on one batch of `field` texts (what each text field costs)."
    b = create_model("semclip-tiny")
    m = b.model
    step = [0]

    def run():
        idx = batch_indices(len(data), B, step[0], 0)
        step[0] += 1
        encode_tokens(m, data.tokens[field][idx]).sum().backward()
        m.zero_grad(set_to_none=True)

    return run


def matmul_peak(n=1024, reps=20):
    "fp32 matmul GFLOP/s on this machine now (best of `reps`)."
    x, y = torch.randn(n, n), torch.randn(n, n)
    x @ y
    best = min(_timed(lambda: x @ y) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def open_clip_step_flops():
    "FLOPs of one open_clip training step (forward+backward, full vision tower, untrimmed text) on one batch."
    from torch.utils.flop_counter import FlopCounterMode
    from open_clip.loss import ClipLoss

    m = create_model("semclip-tiny").model
    m.output_dict = True
    with FlopCounterMode(display=False) as fc:
        out = m(data.images[:B], data.tokens["caption"][:B])
        ClipLoss()(out["image_features"], out["text_features"], out["logit_scale"]).backward()
    return fc.get_total_flops()


def open_clip_epoch(frozen, from_memory):
    "open_clip's train_one_epoch on the same model config and rows; returns a closure running `steps` steps."
    from open_clip_train.train import train_one_epoch
    from open_clip_train.data import DataInfo, CsvDataset
    from open_clip.loss import ClipLoss

    b = create_model("semclip-tiny")
    m = b.model
    freeze(m, vision=frozen)
    m.output_dict = True  # as open_clip_train.main creates its models
    opt = torch.optim.AdamW([q for q in m.parameters() if q.requires_grad], lr=1e-4, weight_decay=0.2)
    if from_memory:
        ds = torch.utils.data.TensorDataset(data.images, data.tokens["caption"])
        workers = 0
    else:
        tsv = Path(tempfile.mkdtemp()) / "train.tsv"
        data.df.assign(filepath=[str(p) for p in data.df["image"]])[["filepath", "caption"]].to_csv(
            tsv, sep="\t", index=False
        )
        ds = CsvDataset(str(tsv), b.preprocess_train, "filepath", "caption", tokenizer=b.tokenizer)
        workers = 1
    args = types.SimpleNamespace(
        device="cpu",
        precision="fp32",
        accum_freq=1,
        batch_size=B,
        distill=False,
        grad_clip_norm=1.0,
        horovod=False,
        log_every_n_steps=10**9,
        skip_scheduler=True,
        wandb=False,
        world_size=1,
        rank=0,
        local_rank=0,
        val_frequency=0,
    )
    loss = ClipLoss()

    def run_epoch(steps):
        sub = torch.utils.data.Subset(ds, range(steps * B))
        dl = torch.utils.data.DataLoader(sub, batch_size=B, shuffle=False, num_workers=workers, drop_last=True)
        dl.num_batches, dl.num_samples = len(dl), steps * B
        train_one_epoch(m, {"train": DataInfo(dl)}, loss, 0, opt, None, None, None, args)

    return run_epoch


methods = {
    "ours_baseline_frozen": ours("baseline", True),
    "ours_semclip_frozen": ours("semclip", True),
    "text_caption": text_fwd_bwd("caption"),
    "text_paraphrase": text_fwd_bwd("paraphrase"),
    "text_negation": text_fwd_bwd("negation"),
    "ours_pretrain_full": ours("pretrain", False),
}
epochs = {
    "open_clip_frozen_png": open_clip_epoch(True, False),
    "open_clip_full_png": open_clip_epoch(False, False),
    "open_clip_full_memory": open_clip_epoch(False, True),
}
if a.only:
    keep = set(a.only.split(","))
    methods = {k: v for k, v in methods.items() if k in keep}
    epochs = {k: v for k, v in epochs.items() if k in keep}
times = {k: [] for k in [*methods, *epochs]}
peaks = []
for r in range(a.rounds):
    peaks.append(matmul_peak())
    for k, f in methods.items():
        f()
        f()  # warm-up
        t = time.perf_counter()
        for _ in range(a.steps):
            f()
        times[k].append((time.perf_counter() - t) / a.steps)
    for k, f in epochs.items():
        f(1)  # warm-up (and worker start-up)
        t = time.perf_counter()
        f(a.steps)
        times[k].append((time.perf_counter() - t) / a.steps)
    print(f"round {r + 1}: " + ", ".join(f"{k} {1000 * v[-1]:.0f} ms" for k, v in times.items()), flush=True)

med = {k: statistics.median(v) for k, v in times.items()}
if a.only:
    sys.exit(0)
sps = {k: B / v for k, v in med.items()}
base, sem = med["ours_baseline_frozen"], med["ours_semclip_frozen"]
extra = med["text_paraphrase"] + med["text_negation"]
peak = statistics.median(peaks)
flops = open_clip_step_flops()
res = dict(
    machine=dict(
        cpu=platform.processor() or platform.machine(),
        cores=os.cpu_count(),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        python=sys.version.split()[0],
    ),
    batch=B,
    steps_per_round=a.steps,
    rounds=a.rounds,
    ms_per_step={k: round(1000 * v, 1) for k, v in med.items()},
    samples_per_s={k: round(v, 1) for k, v in sps.items()},
    semclip_over_baseline_time=round(sem / base, 3),
    semclip_budget_ms=round(1000 * (base + extra), 1),
    semclip_over_budget=round(sem / (base + extra), 3),
    semclip_within_budget=sem <= 1.1 * (base + extra),
    semclip_budget_2x_caption_ms=round(1000 * (base + 2 * med["text_caption"]), 1),
    matmul_peak_gflops=round(peak, 1),
    open_clip_step_gflop=round(flops / 1e9, 2),
    mfu_percent={
        k: round(100 * flops / B * sps[k] / (peak * 1e9), 1)
        for k in ("ours_pretrain_full", "open_clip_full_png", "open_clip_full_memory")
    },
    ours_vs_open_clip={
        "pretrain_full_vs_open_clip_png": round(sps["ours_pretrain_full"] / sps["open_clip_full_png"], 2),
        "pretrain_full_vs_open_clip_memory": round(sps["ours_pretrain_full"] / sps["open_clip_full_memory"], 2),
        "baseline_frozen_vs_open_clip_frozen_png": round(sps["ours_baseline_frozen"] / sps["open_clip_frozen_png"], 2),
    },
)
print(json.dumps(res, indent=2))
out = Path(__file__).parent / "results" / "train_step.json"
out.write_text(json.dumps(res, indent=2) + "\n")
print(f"written {out}")
