"""Counterfactual images (SynthNeg v3) and the losses that use them (CoN-CLIP distractors, TripletCLIP).

1. Compatibility: adding the counterfactuals changed no existing column, text or image of a generated dataset.
   The digests below were taken from SynthNeg version 2 (before counterfactuals existed) on three small settings;
   the current generator must reproduce them exactly (only the new columns and files are added).
2. Every counterfactual of a small dataset is checked from the files alone: texts against both scenes, pixels
   against a fresh rendering.
(The losses that use counterfactual images are checked across 2 ranks with the others, in tests/test_loss_distributed.py.)
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# ----------------------------------------------------------------------------- 1. compatibility with version 2
OLD_COLUMNS = ["image", "caption", "paraphrased", "negation", "neg_type", "split", "label", "n_objects", "objects"]
CASES = {
    "default": dict(n_pretrain=15, n_train=15, n_val=20, n_test=50),
    "shares": dict(
        n_pretrain=15, n_train=25, n_val=10, n_test=30, seed=3, pretrain_negation_share=0.5, finetune_negation_share=0.3
    ),
    "px64": dict(n_pretrain=5, n_train=5, n_val=5, n_test=25, image_size=64, seed=1),
}
# digests of the version-2 output (semclip.synth with SYNTH_VERSION = 2), computed by `_digest` below; versions 3 and 4
# keep them (4 redraws only the absent mention of a row whose negation contradicted itself: none in these cases)
V2_DIGESTS = {
    "default": dict(
        rows="91c4cda9109657a2a00df1ef682afe391ee729c8e9015798bc915e0a230fbb9e",
        images="140c8bbcb38cd33fd9d8957a3f4b210fb410e1477836d0f85e63d90888d367fd",
        n_images=100,
    ),
    "shares": dict(
        rows="3b2949549a8ebb10186d126a42000dcac293afc89239a1cce7af5f851bbd1451",
        images="139a184da345047a7eae0a3843463efa64e4fe8f0d7a162df529b4d7f08cac67",
        n_images=80,
    ),
    "px64": dict(
        rows="65e7f1a22ba2d73475ea6999b8e2dff95297abd995c141ec9479c43e10214c14",
        images="35be47891fb19f64f857ee71e7fba9196c7949838341511e491f094adb285e9f",
        n_images=40,
    ),
}


def _digest(ds: Path) -> dict:
    "sha256 of the version-2 columns (every cell as written, as strings) and of every (name, bytes) of images/*.png."
    df = pd.read_csv(ds / "triples.csv", dtype=str, keep_default_na=False)
    rows = json.dumps(df[OLD_COLUMNS].values.tolist(), separators=(",", ":"))
    imgs = sorted((ds / "images").glob("*.png"))
    h = hashlib.sha256()
    for p in imgs:
        h.update(p.name.encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return dict(rows=hashlib.sha256(rows.encode()).hexdigest(), images=h.hexdigest(), n_images=len(imgs))


@pytest.mark.parametrize("case", list(CASES))
def test_existing_columns_and_images_unchanged(case, tmp_path):
    from semclip.synth import COLUMNS, SYNTH_VERSION, make_synthneg

    assert SYNTH_VERSION == 4
    ds = make_synthneg(tmp_path, progress=False, **CASES[case])
    assert _digest(ds) == V2_DIGESTS[case], "an existing column or image of the dataset changed"
    df = pd.read_csv(ds / "triples.csv", dtype=str, keep_default_na=False)
    assert list(df.columns) == list(COLUMNS) == OLD_COLUMNS + ["negation_image", "negation_objects"]


def test_digest_sees_a_change(tmp_path):
    "The compatibility check can fail: one changed pixel or one changed text changes the digest."
    from semclip.synth import make_synthneg

    ds = make_synthneg(tmp_path, progress=False, **CASES["px64"])
    want = _digest(ds)
    p = ds / "images" / "000003.png"
    b = bytearray(p.read_bytes())
    b[-20] ^= 1
    p.write_bytes(bytes(b))
    assert _digest(ds)["images"] != want["images"]
    csv = ds / "triples.csv"
    csv.write_text(csv.read_text().replace("circle", "circel", 1))
    assert _digest(ds)["rows"] != want["rows"]


# ----------------------------------------------------------------------------- 2. every counterfactual checked
def test_every_counterfactual_verified_from_files(tmp_path):
    from PIL import Image

    from semclip.synth import Obj, caption_holds, make_synthneg, render_scene

    ds = make_synthneg(
        tmp_path, progress=False, n_pretrain=40, n_train=40, n_val=40, n_test=120, finetune_negation_share=0.3
    )
    df = pd.read_csv(ds / "triples.csv", dtype=str, keep_default_na=False)
    meta = json.loads((ds / "meta.json").read_text())
    made = df[df.negation_image != ""]
    assert sum(c["made"] for c in meta["counterfactuals"].values()) == len(made)
    assert meta["counterfactual_failures"] == [] and len(made) == len(df)  # every row has its counterfactual
    for r in made.itertuples():
        objs, cf = json.loads(r.objects), json.loads(r.negation_objects)
        assert caption_holds(r.caption, objs) and not caption_holds(r.negation, objs), r
        assert caption_holds(r.negation, cf) and not caption_holds(r.caption, cf), r
        assert np.array_equal(np.asarray(Image.open(ds / r.negation_image)), render_scene([Obj(*o) for o in cf])), r
    assert sorted(p.name for p in (ds / "images" / "cf").iterdir()) == sorted(Path(p).name for p in made.negation_image)
