"""One training step's loss and gradients, run alone or under torchrun (used by test_train_distributed.py).

python tests/helpers/dist_step.py OUT.pt ARM ACCUM
torchrun --nproc_per_node 2 tests/helpers/dist_step.py OUT.pt ARM ACCUM
"""

import sys
import torch
from semclip.train import init_distributed, local_rows, accumulate_gradients, allreduce_gradients, allreduce_mean
from semclip.model import create_model
from semclip.loss import make_loss

out, arm, accum = sys.argv[1], sys.argv[2], int(sys.argv[3])
dist = init_distributed("cpu")
torch.manual_seed(0)
bundle = create_model("semclip-tiny")
loss_fn = make_loss(arm, 128)
bundle.model.logit_scale.requires_grad_(bool(loss_fn.uses_model_logit_scale))
B = 16
g = torch.Generator().manual_seed(1)
words = ["red", "blue", "circle", "square", "left", "of", "no", "a", "star", "green"]
texts = {
    f: [" ".join(words[j] for j in torch.randint(0, 10, (6,), generator=g).tolist()) for _ in range(B)]
    for f in ("caption", "paraphrase", "negation")
}
batch = dict(image=torch.randn(B, 3, 32, 32, generator=g), **{f: bundle.tokenizer(t) for f, t in texts.items()})
idx = local_rows(torch.arange(B), dist)
local = {k: v[idx] for k, v in batch.items()}
fields = ("caption", "paraphrase", "negation")
terms = accumulate_gradients(bundle.model, loss_fn, local, fields, accum)
params = dict(list(bundle.model.named_parameters()) + [(f"loss.{n}", p) for n, p in loss_fn.named_parameters()])
allreduce_gradients([p for p in params.values()], dist)
terms = allreduce_mean({k: v for k, v in terms.items() if v.numel() == 1}, dist)
if dist.rank == 0:
    torch.save(
        dict(
            terms={k: v.item() for k, v in terms.items()},
            grads={n: p.grad.clone() for n, p in params.items() if p.grad is not None},
        ),
        out,
    )
