"""Fresh-install test: build the wheel, check what is in it, install it into a new venv, import the public API,
run every console script's --help and a 2-step semclip-train from the installed wheel.

The build copies the files git would ship (tracked + untracked-not-ignored) to a temporary folder, so
nothing in the checkout (build/, *.egg-info) is touched, and builds with `--no-isolation` (setuptools
and wheel come from the running environment: no index is needed). The new venv is created with
`--system-site-packages`; a .pth file also puts the running environment's site-packages on its path
(that is where torch & co live here), AFTER the venv's own, so the imported semclip is the installed
wheel and never the checkout.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)
    assert r.returncode == 0, (
        f"command failed ({r.returncode}): {' '.join(map(str, cmd))}\n--- stdout\n{r.stdout[-4000:]}\n--- stderr\n{r.stderr[-4000:]}"
    )
    return r


def _shipped_files():
    "Files a release would contain: what git tracks plus untracked files it does not ignore."
    if shutil.which("git") and (ROOT / ".git").exists():
        out = _run(["git", "-C", ROOT, "ls-files", "-co", "--exclude-standard", "-z"]).stdout
        return [p for p in out.split("\0") if p and (ROOT / p).is_file()]
    keep = ["pyproject.toml", "README.md", "LICENSE"]
    return [p for p in keep if (ROOT / p).is_file()] + [
        str(p.relative_to(ROOT)) for p in (ROOT / "semclip").rglob("*.py")
    ]


def _version():
    ns = {}
    exec((ROOT / "semclip" / "__init__.py").read_text(), ns)
    return ns["__version__"]


def test_wheel_builds_installs_and_imports(tmp_path):
    src, dist, env, work = (tmp_path / n for n in ("src", "dist", "venv", "work"))
    for rel in _shipped_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", dist, src])
    wheels = list(dist.glob("*.whl"))
    assert len(wheels) == 1, wheels
    whl, version = wheels[0], _version()
    assert whl.name.startswith(f"semclip-{version}-"), whl.name

    # the wheel holds the semclip package and its metadata, nothing else
    names = zipfile.ZipFile(whl).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"semclip", f"semclip-{version}.dist-info"}, tops
    pkg = [n for n in names if n.startswith("semclip/")]
    assert {"semclip/__init__.py", "semclip/core.py", "semclip/data.py"} <= set(pkg), pkg
    bad = [
        n
        for n in names
        if n.endswith((".ipynb", ".csv", ".json", ".pt", ".png", ".jpg"))
        or "/tests/" in n
        or "/nbs/" in n
        or "/data/" in n
        or "__pycache__" in n
    ]
    assert not bad, f"the wheel ships files it should not: {bad}"

    # a fresh venv; install the wheel alone, offline
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", env])
    py = env / "bin" / "python"
    site = Path(_run([py, "-c", 'import sysconfig; print(sysconfig.get_paths()["purelib"])']).stdout.strip())
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_outer_env.pth").write_text("\n".join(sorted(outer)) + "\n")
    # with its dependencies, resolved offline: they must all be satisfied by what is installed (no index is asked)
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-index", "--no-cache-dir", "-q", whl])

    # import the public API from a folder outside the checkout
    work.mkdir()
    code = (
        "import semclip, semclip.core, semclip.data, sys\n"
        "from semclip.data import TripleDataset, get_dataset, read_triples_csv, split_frame, DATASETS\n"
        "assert 'semclip.synth' not in sys.modules, 'semclip.data must import semclip.synth lazily'\n"
        "print(semclip.__version__)\nprint(semclip.__file__)\nprint(','.join(DATASETS))\n"
    )
    envvars = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    envvars["SEMCLIP_DATA"] = str(tmp_path / "data")
    out = _run([py, "-c", code], cwd=work, env=envvars).stdout.split("\n")
    assert out[0] == version
    installed = Path(out[1]).resolve()
    assert installed.is_relative_to(env.resolve()), f"imported semclip from {installed}, not from the new venv"
    assert not installed.is_relative_to(ROOT), installed
    assert out[2].split(",")[:4] == ["synthneg", "ccneg", "sugarcrepe_pp", "semclip_csv"]

    # every console script answers --help, from the installed wheel
    for script in ("semclip-train", "semclip-eval", "semclip-triples", "semclip-shards", "semclip-reproduce"):
        r = _run([env / "bin" / script, "--help"], cwd=work, env=envvars)
        assert r.stdout.startswith("usage: " + script), (script, r.stdout[:300])
    # and a 2-step training on SynthNeg runs end to end
    r = _run(
        [
            env / "bin" / "semclip-train",
            "--dataset",
            "synthneg",
            "--arm",
            "pretrain",
            "--steps",
            "2",
            "--batch-size",
            "16",
            "--max-train",
            "64",
            "--init-checkpoint",
            "none",
            "--eval-every",
            "0",
            "--ckpt-every",
            "0",
            "--no-progress",
            "--out-dir",
            str(tmp_path / "run"),
        ],
        cwd=work,
        env={**envvars, "SEMCLIP_RUNS": str(tmp_path / "runs")},
    )
    assert (tmp_path / "run" / "final.pt").is_file(), r.stdout[-2000:]
