"""Cross-rank feature gathering: 2 gloo processes give the 1-process loss and gradients on the same global batch.

Each rank holds a slice of one global batch and calls the loss on it (semclip.loss gathers the other ranks'
features with gradients). Convention (open_clip's local_loss + gather_with_grad): the ranks' losses, weighted by
their share of the batch, sum to the 1-process loss; each rank's feature gradient is world_size x the 1-process
gradient of its rows (DDP's mean over ranks divides that back out); the mean over ranks of the gradient of a
loss-owned parameter (SemCLIP's logit scale) is the 1-process gradient. Checked for every loss (the CLIP, NegCLIP,
SemCLIP, CoN-CLIP and TripletCLIP forms, the last two with counterfactual images) on equal and unequal slices.
"""

import sys
import time
from pathlib import Path
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WORLD, D, SCALE = 2, 6, 5.0
SPLITS = [(3, 3), (4, 2)]  # rows per rank: equal, then unequal (the last batch without drop_last)
KEYS = ("image", "text", "paraphrase", "negation", "negation_image")
TEXT_SIDE = dict(paraphrase="paraphrase_features", negation="negation_features")
WITH_IMAGES = dict(negation="negation_features", negation_image="negation_image_features")


def _batch(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(n, D, generator=g, dtype=torch.float64) * (1 + i) for i, k in enumerate(KEYS)}


def _losses():
    "{case: (loss, {batch key: the loss's keyword for it})}: every loss of semclip.loss, and the inputs it uses."
    from semclip.loss import ClipLoss, NegCLIPLoss, CoNCLIPLoss, TripletCLIPLoss, make_loss

    return dict(
        clip=(ClipLoss(), {}),
        clip_raw=(ClipLoss(normalize=False), {}),
        negclip=(NegCLIPLoss(), dict(negation="negation_features")),
        semclip=(make_loss("semclip", D), TEXT_SIDE),
        semclip_img=(make_loss("semclip_img", D, img_margin=0.3), TEXT_SIDE),
        conclip=(make_loss("conclip", D), WITH_IMAGES),
        conclip_distractor_name=(
            CoNCLIPLoss(),
            dict(negation="negation_features", negation_image="distractor_features"),
        ),
        conclip_own_scale=(CoNCLIPLoss(init_logit_scale=1.5), WITH_IMAGES),
        tripletclip=(make_loss("tripletclip", D), WITH_IMAGES),
        tripletclip_released=(TripletCLIPLoss(form="released"), WITH_IMAGES),
    )


CASES = list(_losses())


def _step(case, feats, weight=1.0):
    "Call `case`'s loss on leaf copies of `feats`, back-propagate weight * loss; return loss, feature and parameter grads."
    loss_fn, inputs = _losses()[case]
    x = {k: v.clone().requires_grad_() for k, v in feats.items()}
    loss = loss_fn(
        x["image"], x["text"], torch.tensor(SCALE, dtype=torch.float64), **{kw: x[k] for k, kw in inputs.items()}
    )
    (weight * loss).backward()
    return dict(
        loss=loss.detach(),
        grads={k: v.grad for k, v in x.items() if v.grad is not None},
        params={n: p.grad.clone() for n, p in loss_fn.named_parameters() if p.grad is not None},
    )


def _worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        from semclip.loss import gather_features

        res = {}
        for sizes in SPLITS:
            n = sum(sizes)
            start = sum(sizes[:rank])
            sl = slice(start, start + sizes[rank])
            full = _batch(n)
            local = {k: v[sl] for k, v in full.items()}
            gi, gt, gn = gather_features(local["image"], local["text"], local["negation"])
            res[sizes] = dict(
                gathered_ok=bool(
                    torch.equal(gi, full["image"])
                    and torch.equal(gt, full["text"])
                    and torch.equal(gn, full["negation"])
                )
            )
            for case in CASES:
                res[sizes][case] = _step(case, local, weight=sizes[rank] * world / n)
        torch.save(res, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path, timeout=180):
    ctx = mp.start_processes(
        _worker, args=(WORLD, str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.time() + timeout
    try:
        while not ctx.join(timeout=1):
            if time.time() > deadline:
                raise TimeoutError(f"{WORLD} gloo workers did not finish in {timeout} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return _spawn(tmp_path_factory.mktemp("dist"))


@pytest.mark.parametrize("sizes", SPLITS, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("case", CASES)
def test_two_ranks_equal_one_process(ranks, sizes, case):
    n = sum(sizes)
    assert all(r[sizes]["gathered_ok"] for r in ranks), "gather_features did not return the global batch in rank order"
    ref = _step(case, _batch(n))  # one process: no process group, nothing gathered
    got = [r[sizes][case] for r in ranks]
    # the ranks' losses, weighted by their share of the batch, give the one-process loss
    torch.testing.assert_close(sum(s / n * g["loss"] for s, g in zip(sizes, got)), ref["loss"])
    # every input the loss takes has a gradient, on every rank
    assert set(ref["grads"]) == set(got[0]["grads"]) == {"image", "text", *_losses()[case][1]}
    # each rank's feature gradient is WORLD x the one-process gradient of its own rows
    for k, want in ref["grads"].items():
        torch.testing.assert_close(torch.cat([g["grads"][k] for g in got]) / WORLD, want)
        assert want.abs().max() > 1e-6, f"{case}: the gradient of {k} being compared is zero"
    # a parameter of the loss: the mean over ranks of its gradient (what DDP / an all-reduce mean gives) is the reference
    for p, want in ref["params"].items():
        torch.testing.assert_close(sum(g["params"][p] for g in got) / WORLD, want)
    if case.startswith("semclip") or case == "conclip_own_scale":
        assert "logit_scale" in ref["params"]
