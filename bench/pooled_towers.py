"""Our tower paths against open_clip's, side by side in one run: the pooled last block (`semclip.model.POOLED_TOWERS`)
and the lean blocks before it (`semclip.model.LEAN_BLOCKS`).

    python bench/pooled_towers.py [--batch 256] [--steps 4] [--rounds 3] [--rows 1024]

Times one optimiser step of our trainer on SynthNeg rows in three settings: open_clip's towers ("full":
`POOLED_TOWERS = False`), the last transformer block of each tower computed only where pooling reads with
open_clip's other blocks ("pooled": `LEAN_BLOCKS = False`), and that with the other blocks run by
`full_block` ("pooled+lean", the default), for
  * the pre-training arm (vision tower trained: both towers run), and
  * the SemCLIP arm fine-tuning with a frozen vision tower (captions, paraphrases, negations: text only),
plus the evaluation's text encoding (`ClipBundle.encode_texts` on test-split captions, no gradient).
The settings are interleaved over several rounds, in a rotating order (this machine is noisy); medians and their
ratios are printed and written to bench/results/pooled_towers.json, with the largest feature difference between
the default and open_clip's path (the same weights, the same batch): the fast path must agree to float rounding.
"""

import argparse
import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path
import torch

import semclip.model as sm
from semclip.model import create_model, freeze, encode_pixels, encode_tokens
from semclip.loss import make_loss
from semclip.train import prepare_split, batch_indices, _batch, optimizer_step, make_optimizer, WarmupCosine

ap = argparse.ArgumentParser()
ap.add_argument("--batch", type=int, default=256)
ap.add_argument("--steps", type=int, default=4, help="timed steps per round and setting")
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--rows", type=int, default=1024)
a = ap.parse_args()
torch.manual_seed(0)

bundle = create_model("semclip-tiny")
data = prepare_split(bundle, "synthneg", "train", None, ("caption", "paraphrase", "negation"), a.rows, progress=False)
print(f"{len(data)} SynthNeg rows, batch {a.batch}, {torch.get_num_threads()} threads")


def train_step(arm: str, frozen: bool):
    "A closure running one optimiser step of our trainer for `arm`."
    m = create_model("semclip-tiny").model
    loss_fn = make_loss("baseline" if arm == "pretrain" else arm, 128)
    freeze(m, vision=frozen)
    fields = ("caption",) + tuple(f for f in ("paraphrase", "negation") if f in loss_fn.required_inputs)
    opt = make_optimizer(m, loss_fn, 1e-4, 0.2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(10, 1000))
    trainable = [q for g in opt.param_groups for q in g["params"]]
    rows = data
    if frozen:
        with torch.no_grad():
            feats = encode_pixels(m, data.images)
        rows = dataclasses.replace(data, images=None, image_features=feats)
    step = [0]

    def run():
        idx = batch_indices(len(data), a.batch, step[0], 0)
        step[0] += 1
        optimizer_step(m, loss_fn, _batch(rows, idx, fields, "cpu"), fields, opt, sched, trainable)

    return run


def eval_texts():
    "A closure encoding every caption once, as the evaluation does (no gradient)."
    texts = data.df["caption"].astype(str).tolist()

    def run():
        with torch.no_grad():
            bundle.encode_texts(texts)

    return run


def timed(f, n: int) -> float:
    "Seconds per call of `f`, over `n` calls."
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) / n


SETTINGS = {
    "full": (False, False),
    "pooled": (True, False),
    "pooled+lean": (True, True),
}  # (POOLED_TOWERS, LEAN_BLOCKS)


def use(setting: str):
    sm.POOLED_TOWERS, sm.LEAN_BLOCKS = SETTINGS[setting]


def agreement() -> dict:
    "The largest feature difference between the default path and open_clip's, on one batch."
    m = bundle.model.eval()
    idx = torch.arange(min(a.batch, len(data)))
    out = {}
    with torch.no_grad():
        for setting in ("pooled+lean", "full"):
            use(setting)
            out[setting] = (encode_pixels(m, data.images[idx]), encode_tokens(m, data.tokens["negation"][idx]))
    use("pooled+lean")
    return {k: float((out["pooled+lean"][i] - out["full"][i]).abs().max()) for i, k in enumerate(("image", "text"))}


cases = {
    "pre-training step": train_step("pretrain", frozen=False),
    "fine-tuning step (semclip, frozen vision)": train_step("semclip", frozen=True),
    "evaluation text encoding": eval_texts(),
}
names = list(SETTINGS)
times = {(c, p): [] for c in cases for p in names}
for f in cases.values():  # warm up every setting
    for p in names:
        use(p)
        f()
for r in range(a.rounds):
    for c, f in cases.items():
        for p in names[r % 3 :] + names[: r % 3]:  # each setting first in turn
            use(p)
            times[c, p].append(timed(f, a.steps))
use("pooled+lean")

result = dict(
    machine=dict(cpu=platform.machine(), python=platform.python_version(), threads=torch.get_num_threads()),
    batch=a.batch,
    rows=len(data),
    rounds=a.rounds,
    steps=a.steps,
    seconds_median={},
    speedup={},
    lean_over_pooled_time={},
    max_abs_difference=agreement(),
)
print(f"{'':44s} {'full (s)':>9s} {'pooled (s)':>11s} {'+lean (s)':>10s} {'speed-up':>9s} {'lean/pooled':>12s}")
for c in cases:
    med = {p: statistics.median(times[c, p]) for p in names}
    result["seconds_median"][c] = {p: round(v, 4) for p, v in med.items()}
    result["speedup"][c] = round(med["full"] / med["pooled+lean"], 2)
    result["lean_over_pooled_time"][c] = round(med["pooled+lean"] / med["pooled"], 3)
    print(
        f"{c:44s} {med['full']:9.3f} {med['pooled']:11.3f} {med['pooled+lean']:10.3f} "
        f"{med['full'] / med['pooled+lean']:8.2f}x {med['pooled+lean'] / med['pooled']:12.3f}"
    )
print("largest feature difference, default vs open_clip:", result["max_abs_difference"])
out = Path(__file__).parent / "results" / "pooled_towers.json"
out.write_text(json.dumps(result, indent=1) + "\n")
print(f"wrote {out}")
