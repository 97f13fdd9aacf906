"""End to end through the evaluation's two front doors: `python -m semclip.eval` (the `semclip-eval`
console script) on every real-format fixture in data/fixtures/, and the notebook nbs/06_eval.ipynb
executed by papermill with parameters. Runs offline, with private data and runs roots."""
import json, os, re, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "data" / "fixtures"
SCPP_SUBSETS = ("replace_att", "replace_obj", "replace_rel", "swap_att", "swap_obj")
# metrics that are fractions in [0, 1]
FRACTION = re.compile(r"^(neg_acc(_scaled)?(/.*)?|(para_)?(t2i|i2t)_R@\d+|combined|sc_(itt|tot)(/.*|_mean|_all)|zs_acc_(orig|neg)/.*)$")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    "The environment of every subprocess: offline hub, fresh data and runs roots."
    e = dict(os.environ, HF_HUB_OFFLINE="1", MPLBACKEND="Agg",
             SEMCLIP_RUNS=str(tmp_path_factory.mktemp("runs")), SEMCLIP_DATA=str(tmp_path_factory.mktemp("data")))
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
    return subprocess.run([sys.executable, "-m", "semclip.eval", "--no-progress", *map(str, args)],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)


# fixture -> (extra arguments, keys that must be there, keys that must not)
CASES = {
    "semclip_csv": (["--zeroshot", "cifar10"], ["para_t2i_R@1", "para_i2t_R@1", "combined", "cos_img_para"], ["sc_itt_mean"]),
    "ccneg": (["--zeroshot", "none"], [], ["para_t2i_R@1", "combined", "cos_img_para", "sc_itt_mean"]),   # CC-Neg has no paraphrases
    "sugarcrepe_pp": (["--zeroshot", "none", "--dataset_kw", f"images_dir={FIX}/sugarcrepe_pp/val2017"],
                      [f"sc_{m}/{s}" for s in SCPP_SUBSETS for m in ("itt", "tot")] + ["sc_itt_mean", "sc_tot_mean", "combined"], []),
}
COMMON = ["checkpoint", "model", "pretrained", "dataset", "split", "n_samples", "n_images", "neg_acc", "neg_acc_scaled", "neg_n",
          "t2i_R@1", "t2i_R@3", "t2i_R@5", "i2t_R@1", "i2t_R@5", "t2i_mean_rank", "cos_img_cap", "cos_img_neg", "cos_cap_neg"]


@pytest.mark.parametrize("name", list(CASES))
def test_fixture(name, env, checkpoint):
    extra, want, absent = CASES[name]
    p = semclip_eval(env, "--checkpoint", checkpoint, "--dataset", name, "--data_root", FIX / name, "--split", "all", *extra)
    assert p.returncode == 0, p.stdout + p.stderr
    out = checkpoint.parent / f"eval-{name}-all"            # the default out_dir: next to the checkpoint
    assert f"to {out}" in p.stdout and "| neg_acc " in p.stdout, p.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert {k: m[k] for k in ("checkpoint", "model", "pretrained", "dataset", "split")} == dict(
        checkpoint=str(checkpoint), model="semclip-tiny", pretrained=None, dataset=name, split="all")
    assert [k for k in COMMON + want if k not in m] == []
    assert [k for k in absent if k in m] == []
    fr = {k: v for k, v in m.items() if FRACTION.match(k)}
    assert len(fr) >= 8 and all(isinstance(v, float) and 0 <= v <= 1 for v in fr.values()), fr
    assert m["n_samples"] == m["neg_n"] > 0 and 1 <= m["t2i_mean_rank"] <= m["n_images"]
    for f in ("metrics.md", "embeddings.pt", "meta.csv"): assert (out / f).is_file(), f
    if name == "semclip_csv":                                 # an absent torchvision set: recorded and printed, not fatal
        assert "zeroshot" not in m and "cifar10 (test) not found" in m["zs_skipped/cifar10"]
        assert "zero-shot cifar10: SKIPPED" in p.stdout and "zs_acc_orig/mean" not in m
    print(name, json.dumps({k: round(v, 4) for k, v in fr.items()}))


def test_papermill(env, checkpoint, tmp_path, monkeypatch):
    "The notebook as an evaluation report: parameters injected by papermill, files written to out_dir."
    pm = pytest.importorskip("papermill")
    for k in ("SEMCLIP_RUNS", "SEMCLIP_DATA", "HF_HUB_OFFLINE", "MPLBACKEND"): monkeypatch.setenv(k, env[k])
    monkeypatch.delenv("IN_TEST", raising=False)
    out = tmp_path / "report"
    nb = pm.execute_notebook(str(ROOT / "nbs" / "06_eval.ipynb"), str(tmp_path / "06_eval.out.ipynb"), kernel_name="python3",
                             cwd=str(ROOT), progress_bar=False,
                             parameters=dict(checkpoint=str(checkpoint), dataset="semclip_csv", data_root=str(FIX / "semclip_csv"),
                                             split="all", zeroshot="", out_dir=str(out)))
    m = json.loads((out / "metrics.json").read_text())
    assert (m["checkpoint"], m["dataset"], m["n_samples"], m["random_init"]) == (str(checkpoint), "semclip_csv", 6, False)
    assert not any(k.startswith("zs_") for k in m)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)


def test_missing_checkpoint(env, tmp_path):
    p = semclip_eval(env, "--checkpoint", tmp_path / "nope.pt", "--dataset", "semclip_csv", "--data_root", FIX / "semclip_csv")
    assert p.returncode != 0
    assert f"semclip-eval: error: checkpoint file '{tmp_path}/nope.pt' does not exist" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_missing_dataset(env, checkpoint):
    p = semclip_eval(env, "--checkpoint", checkpoint, "--dataset", "ccneg")
    assert p.returncode != 0
    where = Path(env["SEMCLIP_DATA"]) / "ccneg"
    assert f"semclip-eval: error: dataset 'ccneg' not found: looked in '{where}' (no such folder)" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
