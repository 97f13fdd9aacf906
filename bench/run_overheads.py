"""What one fine-tuning run of the grid spends beside the arithmetic it needs, before and after, side by side.

    python bench/run_overheads.py [--threads 1] [--steps 4] [--rounds 3]

Three measurements, each of the current code against the code it replaced, interleaved over `--rounds` (this
machine is noisy) on one thread by default, as each run of a reproduction grid gets:
  * token ids of the training split (6,000 rows; captions, paraphrases, negations), as every fine-tuning run
    reads them: tokenised (`prepare_split(..., token_cache=False)`) against read back from the token cache;
  * one SemCLIP fine-tuning step (vision tower frozen): the texts' length groups embedded with one lookup in
    the token table (`semclip.model._embed_groups`) against one lookup per group;
  * one LaCLIP fine-tuning step: its only-logged paraphrases encoded without gradients (`watched_fields`)
    against encoded inside the backward pass.
Medians and the ratios new/old are printed and written to bench/results/run_overheads.json.
"""

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
import torch

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--steps", type=int, default=4, help="timed optimiser steps per round and setting")
ap.add_argument("--rounds", type=int, default=3)
a = ap.parse_args()
torch.set_num_threads(a.threads)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
runs = tempfile.TemporaryDirectory()
os.environ["SEMCLIP_RUNS"] = runs.name  # a token cache of its own

import semclip.model as sm  # noqa: E402
import semclip.train as st  # noqa: E402
from semclip.model import create_model, freeze  # noqa: E402

bundle = create_model("semclip-tiny")
FIELDS = ("caption", "paraphrase", "negation")


def split(cache: bool):
    return st.prepare_split(bundle, "synthneg", "train", None, FIELDS, progress=False, images=False, token_cache=cache)


data = split(True)  # builds SynthNeg if needed and fills the token cache
print(f"{len(data)} SynthNeg training rows, batch 256, {torch.get_num_threads()} thread(s)")


def one_lookup_per_group(m, ids):
    "The lookup `_embed_groups` replaced: one per length group."
    return [m.token_embedding(t) for t in ids]


def step(arm: str):
    "A closure running one optimiser step of `arm` with a frozen vision tower, as a fine-tuning run does."
    torch.manual_seed(0)
    m = create_model("semclip-tiny").model
    freeze(m, vision=True)
    loss_fn, fields = st.arm_loss(st.TrainParams(arm=arm), m, "cpu")
    opt = st.make_optimizer(m, loss_fn, 1e-4, 0.2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, st.WarmupCosine(10, 1000))
    trainable = [q for g in opt.param_groups for q in g["params"]]
    rows = dataclasses.replace(data, image_features=torch.randn(len(data), 128))
    k = [0]

    def run():
        gen = torch.Generator().manual_seed(k[0])
        b = st._batch(
            rows, st.batch_indices(len(rows), 256, k[0], 0), fields, "cpu", 0.5 if arm == "laclip" else 0, gen
        )
        k[0] += 1
        st.optimizer_step(m, loss_fn, b, fields, opt, sched, trainable)

    return run


def timed(f, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) / n


semclip_step, laclip_step = step("semclip"), step("laclip")
real_embed, real_watched = sm._embed_groups, st.watched_fields
cases = {  # name: {setting: (set up, run, calls per timing)}
    "token ids of the training split": {
        "new": (lambda: None, lambda: split(True), 1),
        "old": (lambda: None, lambda: split(False), 1),
    },
    "semclip step: token-table lookups": {
        "new": (lambda: setattr(sm, "_embed_groups", real_embed), semclip_step, a.steps),
        "old": (lambda: setattr(sm, "_embed_groups", one_lookup_per_group), semclip_step, a.steps),
    },
    "laclip step: logged paraphrases": {
        "new": (lambda: setattr(st, "watched_fields", real_watched), laclip_step, a.steps),
        "old": (lambda: setattr(st, "watched_fields", lambda loss_fn, fields: ()), laclip_step, a.steps),
    },
}
times = {(c, s): [] for c in cases for s in ("new", "old")}
for c, settings in cases.items():  # warm up
    for s, (setup, run, _) in settings.items():
        setup()
        run()
for r in range(a.rounds):
    for c, settings in cases.items():
        for s in ("new", "old") if r % 2 == 0 else ("old", "new"):
            setup, run, n = settings[s]
            setup()
            times[c, s].append(timed(run, n))
sm._embed_groups, st.watched_fields = real_embed, real_watched

result = dict(
    machine=dict(cpu=platform.machine(), python=platform.python_version(), threads=torch.get_num_threads()),
    rows=len(data),
    rounds=a.rounds,
    steps=a.steps,
    seconds_median={},
    new_over_old_time={},
)
print(f"{'':36s} {'old (s)':>8s} {'new (s)':>8s} {'new/old':>8s}")
for c in cases:
    old, new = statistics.median(times[c, "old"]), statistics.median(times[c, "new"])
    result["seconds_median"][c] = dict(old=round(old, 4), new=round(new, 4))
    result["new_over_old_time"][c] = round(new / old, 3)
    print(f"{c:36s} {old:8.3f} {new:8.3f} {new / old:8.3f}")
out = Path(__file__).parent / "results" / "run_overheads.json"
out.write_text(json.dumps(result, indent=1) + "\n")
print(f"wrote {out}")
