#!/usr/bin/env python
"""Run notebooks top to bottom as the tests do and keep their outputs in the files (the companion's book).

    python tools/execute_nbs.py nbs/01a_synth.ipynb ...     # or no argument: every notebook in nbs/

Cells flagged with a `tst_flags` flag (notest, slow, cuda) are skipped, as in `make test`. Outputs are made
portable before they are written: the checkout's path becomes relative, temporary folders become `<tmp>`,
the home folder `~`, and the folder in $SEMCLIP_RUNS (the figures notebook draws the run grid there, e.g. the
reference run's, when it has one) `$SEMCLIP_RUNS`. Then `nbdev-clean` strips what changes between runs (execution counts, metadata).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_TMP = re.compile(re.escape(tempfile.gettempdir().rstrip("/")) + r'/[^\s\'"/:,)]+')


def portable(text: str) -> str:
    "`text` without this machine's paths."
    runs = os.environ.get("SEMCLIP_RUNS", "").rstrip("/")
    if runs:  # a run grid read by the figures notebook: the variable that points to it, not this machine's folder
        text = text.replace(str(Path(runs).expanduser().resolve()), "$SEMCLIP_RUNS").replace(runs, "$SEMCLIP_RUNS")
    text = text.replace(str(ROOT) + "/", "").replace(str(ROOT), ".")
    text = _TMP.sub("<tmp>", text)
    return text.replace(str(Path.home()), "~")


def scrub(nb_path: Path) -> int:
    "Make every text output of a notebook portable; return how many code cells have outputs."
    nb = json.loads(nb_path.read_text())
    n = 0
    for c in nb["cells"]:
        if c["cell_type"] != "code":
            continue
        n += bool(c.get("outputs"))
        for o in c.get("outputs", []):
            if "text" in o:
                o["text"] = [portable(t) for t in o["text"]] if isinstance(o["text"], list) else portable(o["text"])
            for k, v in (o.get("data") or {}).items():
                if k.startswith("text/") or k in ("application/json",):
                    o["data"][k] = (
                        [portable(t) for t in v] if isinstance(v, list) else portable(v) if isinstance(v, str) else v
                    )
            if "traceback" in o:
                o["traceback"] = [portable(t) for t in o["traceback"]]
    nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return n


def main(paths):
    from nbdev.config import get_config
    from nbdev.test import test_nb

    skip = get_config(ROOT).tst_flags
    skip = skip.split() if isinstance(skip, str) else list(skip)
    paths = [Path(p).resolve() for p in paths] or sorted(
        p for p in (ROOT / "nbs").glob("*.ipynb") if not p.name.startswith("_")
    )
    failed = []
    for p in paths:
        t0 = time.time()
        ok, _ = test_nb(p, skip_flags=skip, basepath=ROOT, showerr=True, save=True, cell_timeout=900)
        if not ok:
            failed.append(p.name)
            print(f"{p.name}: FAILED, not saved")
            continue
        n = scrub(p)
        subprocess.run(
            [str(Path(sys.executable).parent / "nbdev-clean"), "--fname", str(p)], check=True, capture_output=True
        )
        print(f"{p.name}: {n} code cells with outputs, {p.stat().st_size / 1024:.0f} KiB, {time.time() - t0:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
