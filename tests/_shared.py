"""Helpers several test modules share: a read-only folder, SynthNeg written as the SemCLIP CSV, and the steps a run logged."""

import contextlib
import json
import os
import subprocess
from pathlib import Path
import pandas as pd
import pytest


@contextlib.contextmanager
def read_only(folder):
    "Make `folder` unwritable, even for root (an immutable directory), and undo it afterwards."
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("running as root without chattr: cannot make a folder read-only")
        try:
            yield folder
        finally:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    else:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)


def synthneg_as_semclip_csv(base: Path, n_train: int) -> Path:
    "A SynthNeg of `n_train` images written in the SemCLIP CSV layout (`dataset='semclip_csv'`) under `base`; returns its folder."
    from semclip.synth import make_synthneg

    src = make_synthneg(base, n_pretrain=0, n_train=n_train, n_val=0, n_test=0, progress=False)
    df = pd.read_csv(src / "triples.csv", keep_default_na=False)
    d = base / "semclip_csv"
    d.mkdir()
    pd.DataFrame(
        dict(
            filename=[Path(p).name for p in df["image"]],
            caption=df["caption"],
            paraphrased=df["paraphrased"],
            negation=df["negation"],
        )
    ).to_csv(d / "ccneg_paraphrased.csv", index=False)
    os.symlink(src / "images", d / "images")
    return d


def train_steps(out_dir):
    "The `step` of every training record in out_dir/log.jsonl (ignoring a line being written)."
    f = Path(out_dir) / "log.jsonl"
    if not f.exists():
        return []
    out = []
    for line in f.read_text().splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if "split" not in r and "step" in r:
            out.append(r["step"])
    return out
