#!/usr/bin/env python
"""Round-trip nbdev notebooks through a plain-text form that is easy to edit.

    python tools/nbpy.py py2nb nbs/02_loss.nbpy nbs/02_loss.ipynb
    python tools/nbpy.py nb2py nbs/02_loss.ipynb /tmp/02_loss.nbpy

Text form: cells are separated by a line `# %%` (code cell) or `# %% [md]` (markdown cell,
raw markdown that is not commented out). The .ipynb stays the single source of truth; the
.nbpy files are scratch copies and are git-ignored. py2nb keeps the outputs of the code cells whose source did
not change (rerun `python tools/execute_nbs.py` on a notebook to refresh them all).
"""

import json
import sys
import re
from pathlib import Path

_sep = re.compile(r"^# %%( \[md\]| \[parameters\])?\s*$")


def py2nb(src, dst):
    cells, cur, kind, tags = [], None, None, []

    def flush():
        nonlocal tags
        if cur is None:
            return
        txt = "\n".join(cur).strip("\n")
        if not txt and kind == "code":
            return
        c = dict(cell_type=kind, metadata=dict(tags=tags) if tags else {}, source=txt.splitlines(True))
        if kind == "code":
            c.update(execution_count=None, outputs=[])
        cells.append(c)

    for line in Path(src).read_text().splitlines():
        m = _sep.match(line)
        if m:
            flush()
            cur, kind = [], ("markdown" if m.group(1) == " [md]" else "code")
            tags = ["parameters"] if m.group(1) == " [parameters]" else []
        elif cur is not None:
            cur.append(line)
    flush()
    nb = dict(
        cells=cells,
        metadata=dict(kernelspec=dict(display_name="python3", language="python", name="python3")),
        nbformat=4,
        nbformat_minor=5,
    )
    for i, c in enumerate(nb["cells"]):
        c["id"] = f"{i:08x}"
    if Path(dst).exists():  # keep the committed outputs of every code cell whose source did not change
        old = {}
        for c in json.loads(Path(dst).read_text())["cells"]:
            if c["cell_type"] == "code" and c.get("outputs"):
                old.setdefault("".join(c["source"]), c["outputs"])
        for c in nb["cells"]:
            if c["cell_type"] == "code":
                c["outputs"] = old.get("".join(c["source"]), [])
    Path(dst).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def nb2py(src, dst):
    nb = json.loads(Path(src).read_text())
    out = []
    for c in nb["cells"]:
        tags = c.get("metadata", {}).get("tags", [])
        out.append(
            "# %% [md]" if c["cell_type"] == "markdown" else "# %% [parameters]" if "parameters" in tags else "# %%"
        )
        out.append("".join(c["source"]))
        out.append("")
    Path(dst).write_text("\n".join(out))


if __name__ == "__main__":
    cmd, a, b = sys.argv[1:4]
    {"py2nb": py2nb, "nb2py": nb2py}[cmd](a, b)
