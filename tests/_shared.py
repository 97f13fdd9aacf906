"""Helpers several test modules share: a read-only folder, SynthNeg written as the SemCLIP CSV, the parameters, command
line and environment of a quick training run, and the steps a run logged."""

import contextlib
import json
import os
import subprocess
from pathlib import Path
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


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
    return semclip_csv_from(src, base / "semclip_csv")


def semclip_csv_from(src: Path, d: Path) -> Path:
    "The SynthNeg folder `src` written in the SemCLIP CSV layout in the new folder `d` (images linked); returns `d`."
    df = pd.read_csv(src / "triples.csv", keep_default_na=False)
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


def quick_run_params(data_dir, out_dir, arm: str = "pretrain", **kw) -> dict:
    "`semclip.train.train` parameters of a quick CPU run on the SemCLIP CSV in `data_dir` (no validation, no init); `kw` adds or overrides."
    return dict(
        dict(
            dataset="semclip_csv",
            data_root=str(data_dir),
            arm=arm,
            eval_every=0,
            init_checkpoint=None,
            progress=False,
            out_dir=str(out_dir),
            device="cpu",
        ),
        **kw,
    )


def train_cli_args(p: dict) -> list:
    "`python -m semclip.train` arguments for the parameters `p`."
    val = lambda v: "none" if v is None else ("true" if v is True else "false" if v is False else str(v))
    return [a for k, v in p.items() for a in (f"--{k}", val(v))]


def subprocess_env(**extra) -> dict:
    "The environment of a semclip subprocess: offline, this checkout importable, unbuffered output, plus `extra`."
    return dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **extra)
