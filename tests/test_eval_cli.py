"""End to end through the evaluation's two front doors: `python -m semclip.eval` (the `semclip-eval`
console script) on every real-format fixture in data/fixtures/, and the notebook nbs/06_eval.ipynb
executed by papermill with parameters. Runs offline, with private data and runs roots."""

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
import pytest
from _shared import read_only

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "data" / "fixtures"
SCPP_SUBSETS = ("replace_att", "replace_obj", "replace_rel", "swap_att", "swap_obj")
# metrics that are fractions in [0, 1]
FRACTION = re.compile(
    r"^(neg_acc(_scaled)?(/.*)?|(para_)?(t2i|i2t)_R@\d+|combined|sc_(itt|tot)(/.*|_mean|_all)|zs_acc_(orig|neg)/.*)$"
)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    "The environment of every subprocess: offline hub, fresh data and runs roots."
    e = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        MPLBACKEND="Agg",
        SEMCLIP_RUNS=str(tmp_path_factory.mktemp("runs")),
        SEMCLIP_DATA=str(tmp_path_factory.mktemp("data")),
    )
    e.pop("IN_TEST", None)
    return e


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    "A randomly initialised semclip-tiny saved as a semclip checkpoint."
    import torch
    from semclip.model import create_model, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "run" / "final.pt", model=create_model("semclip-tiny"))


def semclip_eval(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "semclip.eval", "--no-progress", *map(str, args)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def eval_on_csv(env, checkpoint, out_dir, *extra):
    "`semclip-eval` of `checkpoint` on the SemCLIP-CSV fixture (every row, no zero-shot) into `out_dir`."
    return semclip_eval(
        env,
        "--checkpoint",
        checkpoint,
        *("--dataset", "semclip_csv", "--data_root", FIX / "semclip_csv", "--split", "all", "--zeroshot", "none"),
        *extra,
        "--out_dir",
        out_dir,
    )


# fixture -> (extra arguments, keys that must be there, keys that must not)
CASES = {
    "semclip_csv": (
        ["--zeroshot", "cifar10"],
        ["para_t2i_R@1", "para_i2t_R@1", "combined", "cos_img_para"],
        ["sc_itt_mean"],
    ),
    "ccneg": (
        ["--zeroshot", "none"],
        [],
        ["para_t2i_R@1", "combined", "cos_img_para", "sc_itt_mean"],
    ),  # CC-Neg has no paraphrases
    "sugarcrepe_pp": (
        ["--zeroshot", "none", "--dataset_kw", f"images_dir={FIX}/sugarcrepe_pp/val2017"],
        [f"sc_{m}/{s}" for s in SCPP_SUBSETS for m in ("itt", "tot")] + ["sc_itt_mean", "sc_tot_mean", "combined"],
        [],
    ),
}
COMMON = [
    "checkpoint",
    "model",
    "pretrained",
    "dataset",
    "split",
    "n_samples",
    "n_images",
    "neg_acc",
    "neg_acc_scaled",
    "neg_n",
    "t2i_R@1",
    "t2i_R@3",
    "t2i_R@5",
    "i2t_R@1",
    "i2t_R@5",
    "t2i_mean_rank",
    "cos_img_cap",
    "cos_img_neg",
    "cos_cap_neg",
]


@pytest.mark.parametrize("name", list(CASES))
def test_fixture(name, env, checkpoint):
    extra, want, absent = CASES[name]
    p = semclip_eval(
        env, "--checkpoint", checkpoint, "--dataset", name, "--data_root", FIX / name, "--split", "all", *extra
    )
    assert p.returncode == 0, p.stdout + p.stderr
    out = checkpoint.parent / f"eval-{name}-all"  # the default out_dir: next to the checkpoint
    assert f"to {out}" in p.stdout and "| neg_acc " in p.stdout, p.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert {k: m[k] for k in ("checkpoint", "model", "pretrained", "dataset", "split")} == dict(
        checkpoint=str(checkpoint), model="semclip-tiny", pretrained=None, dataset=name, split="all"
    )
    assert [k for k in COMMON + want if k not in m] == []
    assert [k for k in absent if k in m] == []
    fr = {k: v for k, v in m.items() if FRACTION.match(k)}
    assert len(fr) >= 8 and all(isinstance(v, float) and 0 <= v <= 1 for v in fr.values()), fr
    assert m["n_samples"] == m["neg_n"] > 0 and 1 <= m["t2i_mean_rank"] <= m["n_images"]
    for f in ("metrics.md", "embeddings.pt", "meta.csv"):
        assert (out / f).is_file(), f
    if name == "semclip_csv":  # an absent torchvision set: recorded and printed, not fatal
        assert "zeroshot" not in m and "cifar10 (test) not found" in m["zs_skipped/cifar10"]
        assert "zero-shot cifar10: SKIPPED" in p.stdout and "zs_acc_orig/mean" not in m
    print(name, json.dumps({k: round(v, 4) for k, v in fr.items()}))


def test_papermill(env, checkpoint, tmp_path, monkeypatch):
    "The notebook as an evaluation report: parameters injected by papermill, files written to out_dir."
    pm = pytest.importorskip("papermill")
    for k in ("SEMCLIP_RUNS", "SEMCLIP_DATA", "HF_HUB_OFFLINE", "MPLBACKEND"):
        monkeypatch.setenv(k, env[k])
    monkeypatch.delenv("IN_TEST", raising=False)
    out = tmp_path / "report"
    nb = pm.execute_notebook(
        str(ROOT / "nbs" / "06_eval.ipynb"),
        str(tmp_path / "06_eval.out.ipynb"),
        kernel_name="python3",
        cwd=str(ROOT),
        progress_bar=False,
        parameters=dict(
            checkpoint=str(checkpoint),
            dataset="semclip_csv",
            data_root=str(FIX / "semclip_csv"),
            split="all",
            zeroshot="",
            out_dir=str(out),
        ),
    )
    m = json.loads((out / "metrics.json").read_text())
    assert (m["checkpoint"], m["dataset"], m["n_samples"], m["random_init"]) == (
        str(checkpoint),
        "semclip_csv",
        6,
        False,
    )
    assert not any(k.startswith("zs_") for k in m)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)


def test_missing_checkpoint(env, tmp_path):
    p = semclip_eval(
        env, "--checkpoint", tmp_path / "nope.pt", "--dataset", "semclip_csv", "--data_root", FIX / "semclip_csv"
    )
    assert p.returncode != 0
    assert f"semclip-eval: error: checkpoint file '{tmp_path}/nope.pt' does not exist" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_missing_dataset(env, checkpoint):
    p = semclip_eval(env, "--checkpoint", checkpoint, "--dataset", "ccneg")
    assert p.returncode != 0
    where = Path(env["SEMCLIP_DATA"]) / "ccneg"
    assert f"semclip-eval: error: dataset 'ccneg' not found: looked in '{where}' (no such folder)" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


# ----------------------------------------------------------------------------- hostile input: fail before compute, one line, exit 2
def _one_line_exit_2(p, want):
    assert p.returncode == 2, (p.returncode, p.stderr[-3000:])
    assert p.stderr.startswith("semclip-eval: error: ") and p.stderr.count("\n") == 1 and want in p.stderr, p.stderr


@pytest.fixture
def no_model(monkeypatch):
    "Fail loudly if the evaluation gets as far as building a model (the check came too late)."
    import semclip.model as M

    def boom(*a, **kw):
        raise AssertionError("a model was built: the check came too late")

    monkeypatch.setattr(M, "create_model", boom)


@pytest.mark.parametrize(
    "case", ["batch_size", "dataset_kw", "out_dir_is_a_file", "read_only", "device", "max_samples"]
)
def test_bad_arguments_fail_before_compute(case, checkpoint, tmp_path, capsys, no_model):
    from semclip.eval import cli

    afile = tmp_path / "afile"
    afile.write_text("x")
    ro = tmp_path / "ro"
    args, want = {
        "batch_size": (["--batch_size", "0"], "batch_size=0 must be a positive int"),
        "dataset_kw": (
            ["--dataset_kw", "imagesdir=x"],
            "dataset_kw key 'imagesdir' is not an argument of dataset 'semclip_csv'",
        ),
        "out_dir_is_a_file": (["--out_dir", str(afile)], f"out_dir='{afile}' is a file, not a folder"),
        "read_only": (["--out_dir", str(ro / "eval")], f"out_dir='{ro / 'eval'}' is not writable"),
        "device": (["--device", "foo"], "device='foo' is not a torch device"),
        "max_samples": (["--max_samples", "-2"], "max_samples=-2 must be a positive int"),
    }[case]
    base = [
        "--checkpoint",
        str(checkpoint),
        "--dataset",
        "semclip_csv",
        "--data_root",
        str(FIX / "semclip_csv"),
        "--split",
        "all",
        "--zeroshot",
        "none",
        "--no-progress",
        "--out_dir",
        str(tmp_path / "eval"),
    ]
    with read_only(ro) if case == "read_only" else contextlib.nullcontext():
        try:
            cli(base + args)
            code = 0
        except SystemExit as e:
            code = e.code
    err = capsys.readouterr().err
    print(err)
    assert code == 2 and err.startswith("semclip-eval: error: ") and err.count("\n") == 1 and want in err, (code, err)
    assert not (tmp_path / "eval").exists()


def test_bad_batch_size_in_a_process(env, checkpoint, tmp_path):
    p = eval_on_csv(env, checkpoint, tmp_path / "eval", "--batch_size", "0")
    _one_line_exit_2(p, "batch_size=0 must be a positive int")
    assert not (tmp_path / "eval").exists()


def test_out_dir_in_use(env, checkpoint, tmp_path):
    "A second writer of one eval folder (here a process holding its RunLock) is refused at once, naming the holder."
    out = tmp_path / "eval"
    code = "import sys; from semclip.core import RunLock\nwith RunLock(sys.argv[1]):\n    print('locked', flush=True); sys.stdin.readline()"
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(out)],
        env=env,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n", holder.stderr.read()
        p = eval_on_csv(env, checkpoint, out)
        _one_line_exit_2(p, f"'{out}' is in use by pid {holder.pid}")
        assert not (out / "metrics.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_flipped_bytes_in_the_checkpoint(env, checkpoint, tmp_path):
    "A checkpoint whose bytes changed on disk (torch reads it without complaint) is refused, naming the file."
    import torch
    import zipfile

    bad = tmp_path / "final.pt"
    raw = bytearray(Path(checkpoint).read_bytes())
    with zipfile.ZipFile(checkpoint) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    h = info.header_offset
    start = (
        h
        + 30
        + int.from_bytes(raw[h + 26 : h + 28], "little")
        + int.from_bytes(raw[h + 28 : h + 30], "little")
        + info.file_size // 2
    )
    for i in range(start, start + 16):
        raw[i] ^= 0xFF
    bad.write_bytes(bytes(raw))
    torch.load(bad, weights_only=True)
    p = eval_on_csv(env, bad, tmp_path / "eval")
    _one_line_exit_2(p, f"checkpoint file '{bad}'")
    assert "content hash" in p.stderr and not (tmp_path / "eval").exists()
