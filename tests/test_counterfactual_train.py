"""Training the arms that need counterfactual images (conclip, tripletclip) on a tiny SynthNeg (version 3).

The trainer loads each row's `negation_image` with the model's transform, computes its frozen features once
(cached under a key of its own) or encodes it every step when the vision tower trains, and passes them to the
loss as `negation_image_features=`. A dataset without the column is refused before the run writes anything.
"""

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

N_TRAIN, BATCH, STEPS = 40, 8, 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    "Registers three small datasets built from one tiny SynthNeg: as is, some counterfactuals missing, and none at all."
    from semclip.data import _BUILDERS, DATASETS, read_triples_csv, register_dataset
    from semclip.synth import make_synthneg

    out = make_synthneg(
        tmp_path_factory.mktemp("synth"), n_pretrain=0, n_train=N_TRAIN, n_val=10, n_test=20, progress=False
    )
    full = lambda root, **kw: read_triples_csv(out / "triples.csv")

    def holes(root, **kw):
        df = read_triples_csv(out / "triples.csv")
        tr = df.index[df.split == "train"][:5]
        df.loc[tr, "negation_image"] = None
        return df

    bare = lambda root, **kw: read_triples_csv(out / "triples.csv").drop(columns=["negation_image", "negation_objects"])
    names = {"cf_tiny": full, "cf_holes": holes, "cf_bare": bare}
    for n, fn in names.items():
        register_dataset(n, fn, overwrite=True)
    yield out
    for n in names:
        if n in DATASETS:
            DATASETS.remove(n)
        _BUILDERS.pop(n, None)


def _params(tmp_path, arm, dataset="cf_tiny", **kw):
    return {
        "dataset": dataset,
        "data_root": str(tmp_path),
        "arm": arm,
        "init_checkpoint": None,
        "steps": STEPS,
        "batch_size": BATCH,
        "max_train": N_TRAIN,
        "eval_every": 0,
        "ckpt_every": 0,
        "warmup_steps": 1,
        "device": "cpu",
        "progress": False,
        "out_dir": str(tmp_path / "run" / arm),
        **kw,
    }


def _terms(out_dir):
    from semclip.train import read_log

    return [r for r in read_log(Path(out_dir) / "log.jsonl") if "split" not in r]


@pytest.mark.parametrize("arm", ["conclip", "tripletclip"])
def test_three_steps_frozen_vision(arm, tiny, tmp_path):
    from semclip.train import train

    m = train(_params(tmp_path, arm))
    recs = _terms(tmp_path / "run" / arm)
    assert len(recs) == STEPS
    for r in recs:
        assert math.isfinite(r["loss"]) and math.isfinite(r["contrastive"]), r
    if arm == "conclip":
        assert all("distractor_to_negation" in r for r in recs)  # the distractor images were used
    assert 0 <= m["neg_acc"] <= 1


def test_frozen_counterfactual_features_cached_separately(tiny, tmp_path, monkeypatch):
    from semclip.core import runs_root
    from semclip.train import train

    monkeypatch.setenv("SEMCLIP_RUNS", str(tmp_path / "runs"))
    train(_params(tmp_path, "tripletclip"))
    cached = list((runs_root() / ".cache" / "image_features").glob("*.pt"))
    assert len(cached) == 3, cached  # train images, train counterfactuals, val images


def test_trained_vision_encodes_counterfactuals_each_step(tiny, tmp_path):
    from semclip.train import train

    train(_params(tmp_path, "tripletclip", freeze_vision=True))
    frozen = _terms(tmp_path / "run" / "tripletclip")
    train(_params(tmp_path, "tripletclip", freeze_vision=False, out_dir=str(tmp_path / "run" / "trained")))
    trained = _terms(tmp_path / "run" / "trained")
    assert all(math.isfinite(r["loss"]) for r in trained)
    assert trained[0]["loss"] == pytest.approx(frozen[0]["loss"], rel=1e-4)  # same weights at step 1
    assert trained[-1]["loss"] != pytest.approx(frozen[-1]["loss"], rel=1e-6)  # the vision tower moved


def test_rows_without_counterfactual_are_dropped(tiny, tmp_path, capsys):
    from semclip.train import train

    train(_params(tmp_path, "conclip", dataset="cf_holes", max_train=None))
    out = capsys.readouterr().out
    assert f"split 'train': dropped 5 of {N_TRAIN} rows without a counterfactual image (negation_image)" in out


def test_dataset_without_counterfactuals_refused_at_start(tiny, tmp_path):
    from semclip.core import ConfigError
    from semclip.train import train

    for arm in ("conclip", "tripletclip"):
        with pytest.raises(
            ConfigError, match=f"arm '{arm}' needs counterfactual images .* dataset 'cf_bare' does not have"
        ):
            train(_params(tmp_path, arm, dataset="cf_bare"))
        assert not (tmp_path / "run" / arm).exists()
    train(_params(tmp_path, "negclip", dataset="cf_bare"))  # an arm without them is unaffected


def test_eval_of_a_conclip_checkpoint_reports_wino_scores(tiny, tmp_path):
    import json

    import torch

    from semclip.eval import evaluate_checkpoint, winoground_scores
    from semclip.train import train

    train(_params(tmp_path, "conclip"))
    ck = tmp_path / "run" / "conclip" / "final.pt"
    r = evaluate_checkpoint(
        ck,
        dataset="cf_tiny",
        data_root=str(tmp_path),
        split="test",
        zeroshot=None,
        out_dir=tmp_path / "eval",
        progress=False,
        device="cpu",
    )
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["wino_n"] + m["wino_skipped"] == m["n_samples"] == 20
    for k in ("wino_text", "wino_image", "wino_group"):
        assert 0 <= m[k] <= 1 and m[k] == r[k]
    assert m["wino_group"] <= min(m["wino_text"], m["wino_image"])
    assert any(k.startswith("wino_group/") for k in m)
    e = torch.load(tmp_path / "eval" / "embeddings.pt", weights_only=True)
    assert e["negation_image"].shape == e["image"].shape
    ref = winoground_scores(e["image"], e["caption"], e["negation"], e["negation_image"])
    assert ref["wino_text"] == m["wino_text"] and ref["wino_image"] == m["wino_image"]
    bare = evaluate_checkpoint(
        ck,
        dataset="cf_bare",
        data_root=str(tmp_path),
        split="test",
        zeroshot=None,
        out_dir=tmp_path / "eval_bare",
        progress=False,
        device="cpu",
    )
    assert not any(k.startswith("wino") for k in bare)  # no counterfactual column: no image-side scores
