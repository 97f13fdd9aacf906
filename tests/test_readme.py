"""README.md's results section is generated from the committed reference run; it must agree with it."""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import results_section as rs


def test_readme_results_agree_with_the_reference_run():
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "results_section.py"), "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_changed_number_is_caught(tmp_path):
    "The check can fail: a README whose table differs in one digit does not render equal."
    readme = (ROOT / "README.md").read_text()
    block = rs.section()
    table_line = next(l for l in block.splitlines() if l.startswith("| SemCLIP |"))
    tampered = readme.replace(table_line, table_line.replace("|", "| 0", 2).replace("| 0", "|", 1), 1)
    assert tampered != readme
    assert rs.render(tampered, block) != tampered


def _index_results() -> str:
    "The Markdown that index.ipynb's committed outputs show for the results section."
    import json

    nb = json.loads((ROOT / "nbs" / "index.ipynb").read_text())
    texts = [
        "".join(o.get("data", {}).get("text/markdown", ""))
        for c in nb["cells"]
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
    ]
    return next((t for t in texts if "Made by `semclip-reproduce" in t), "")


def test_index_notebook_shows_the_readme_results():
    "The book's front page shows the same results as the README (its committed output is not stale)."
    shown = _index_results()
    assert shown, "index.ipynb has no committed results output: run python tools/execute_nbs.py nbs/index.ipynb"
    want = rs.section().replace("](figures/", "](../figures/")
    assert shown.strip() == want.strip(), (
        "index.ipynb shows other results than README.md: run python tools/execute_nbs.py nbs/index.ipynb"
    )


def test_the_prose_is_checked_against_the_numbers(tmp_path):
    "Every qualitative sentence holds for the committed run, and one fails when a number moves against it."
    assert rs.false_claims() == [], rs.false_claims()
    ref = tmp_path / "synthneg"
    shutil.copytree(rs.REF, ref)
    fam = pd.read_csv(ref / "table1b_negation_by_type.csv", index_col="arm")
    fam.loc[rs.NEGCLIP, "shortcut probe (mean)"] = fam["shortcut probe (mean)"].max()  # NegCLIP no longer the lowest
    fam.to_csv(ref / "table1b_negation_by_type.csv")
    assert rs.false_claims(ref) == ["NegCLIP-style is the arm that learns the shortcut most"]
